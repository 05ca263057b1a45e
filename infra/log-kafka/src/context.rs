//! librdkafka client contexts: log forwarding to `tracing`, and rebalance capture for
//! consumer-group members.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use imbus_log::{ConsumerEvent, LogError, StartAt, TopicPartition};
use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use crate::KafkaOptions;
use crate::error::map_kafka_error;
use crate::lookup::resolve_start;

/// Forwards librdkafka's log lines and global errors to `tracing`.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogContext;

fn forward_log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", facility, "{message}");
        }
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", facility, "{message}");
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
    }
}

fn forward_error(error: &KafkaError, reason: &str) {
    // Global errors are mostly transient (a broker connection dropped); librdkafka retries
    // on its own, so they are warnings rather than errors.
    tracing::warn!(target: "librdkafka", %error, "{reason}");
}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        forward_error(&error, reason);
    }
}

impl ConsumerContext for LogContext {}

/// The topic-partitions of a librdkafka list.
pub(crate) fn partitions_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

/// What the rebalance callbacks saw, shared between the callback (which runs inside
/// librdkafka's poll) and the member's `poll`.
#[derive(Debug, Default)]
pub(crate) struct GroupState {
    /// Incremented by every rebalance callback; records remember the generation they
    /// were fetched in, so that records of a revoked partition fetched before the
    /// revocation are dropped rather than handed out after it.
    pub(crate) generation: u64,
    /// Events not yet returned by `poll`, each with the generation it started.
    pub(crate) events: VecDeque<(u64, ConsumerEvent)>,
    /// The partitions this member owns right now.
    pub(crate) assignment: BTreeSet<TopicPartition>,
}

/// The context of a consumer-group member.
#[derive(Debug)]
pub(crate) struct GroupContext {
    pub(crate) state: Arc<Mutex<GroupState>>,
    start_if_uncommitted: StartAt,
    options: Arc<KafkaOptions>,
}

impl GroupContext {
    pub(crate) fn new(start_if_uncommitted: StartAt, options: Arc<KafkaOptions>) -> Self {
        Self {
            state: Arc::default(),
            start_if_uncommitted,
            options,
        }
    }

    /// For `StartAt::Offset` and `StartAt::Timestamp` (which `auto.offset.reset` cannot
    /// express): gives partitions without a committed offset an explicit start offset.
    fn position_uncommitted(
        &self,
        consumer: &BaseConsumer<Self>,
        assignment: &mut TopicPartitionList,
    ) -> Result<(), LogError> {
        let committed = consumer
            .committed_offsets(assignment.clone(), self.options.request_timeout)
            .map_err(|e| map_kafka_error("fetch committed offsets", &e))?;
        for element in committed.elements() {
            if matches!(element.offset(), Offset::Offset(_)) {
                continue;
            }
            let (topic, partition) = (element.topic(), element.partition());
            let start = resolve_start(
                consumer,
                &self.options,
                topic,
                partition,
                self.start_if_uncommitted,
            )?;
            assignment
                .set_partition_offset(topic, partition, Offset::Offset(start))
                .map_err(|e| map_kafka_error("position partition", &e))?;
        }
        Ok(())
    }

    fn revoke_all(&self) -> Vec<TopicPartition> {
        let mut state = self.state.lock();
        state.generation += 1;
        let revoked: Vec<TopicPartition> =
            std::mem::take(&mut state.assignment).into_iter().collect();
        if !revoked.is_empty() {
            let generation = state.generation;
            state
                .events
                .push_back((generation, ConsumerEvent::Revoked(revoked.clone())));
        }
        revoked
    }
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        forward_error(&error, reason);
    }
}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let assigned = partitions_of(tpl);
                let mut assignment = tpl.clone();
                if matches!(
                    self.start_if_uncommitted,
                    StartAt::Offset(_) | StartAt::Timestamp(_)
                ) && let Err(error) = self.position_uncommitted(consumer, &mut assignment)
                {
                    tracing::warn!(%error, "cannot position partitions without a committed offset; using the earliest offset");
                    assignment = tpl.clone();
                }
                let result = if cooperative {
                    consumer.incremental_assign(&assignment)
                } else {
                    consumer.assign(&assignment)
                };
                if let Err(error) = result {
                    tracing::error!(%error, "applying the group's partition assignment failed");
                    return;
                }
                tracing::debug!(partitions = ?assigned, "partitions assigned");
                let mut state = self.state.lock();
                state.generation += 1;
                state.assignment.extend(assigned.iter().cloned());
                if !assigned.is_empty() {
                    let generation = state.generation;
                    state
                        .events
                        .push_back((generation, ConsumerEvent::Assigned(assigned)));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked = partitions_of(tpl);
                {
                    let mut state = self.state.lock();
                    state.generation += 1;
                    for tp in &revoked {
                        state.assignment.remove(tp);
                    }
                    if !revoked.is_empty() {
                        let generation = state.generation;
                        state
                            .events
                            .push_back((generation, ConsumerEvent::Revoked(revoked.clone())));
                    }
                }
                tracing::debug!(partitions = ?revoked, lost = consumer.assignment_lost(), "partitions revoked");
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(error) = result {
                    tracing::error!(%error, "giving up revoked partitions failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "consumer group rebalance failed; giving up all partitions");
                self.revoke_all();
                if let Err(error) = consumer.unassign() {
                    tracing::error!(%error, "giving up partitions after a failed rebalance failed");
                }
            }
        }
    }
}
