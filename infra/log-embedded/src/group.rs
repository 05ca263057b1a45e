//! In-process consumer groups.
//!
//! The coordinator knows the live members of every group. Whenever a member joins, closes
//! or is dropped, the partitions of the group's topics are dealt out again round-robin over
//! the members (members ordered by join order, partitions by topic then number), so the
//! assignment is deterministic. Each member learns about changes on its next poll: first
//! `Revoked` for what it lost, then `Assigned` for what it gained. A revoked partition
//! stops accepting the member's commits at once, and its new owner starts from the group's
//! committed offset, so a handover redelivers uncommitted records (at-least-once) and never
//! skips any.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use imbus_log::{
    Acknowledgement, ConsumedRecord, Consumer, ConsumerEvent, ConsumerOptions, LogError, Offset,
    StartAt, TopicPartition,
};
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};

use crate::Inner;
use crate::offsets::GroupOffsets;
use crate::partition::PartitionLog;
use crate::reader::{read_partition, resolve};
use crate::writer::Request;

/// What a member shares with the coordinator.
#[derive(Debug)]
struct MemberShared {
    notify: Arc<Notify>,
    generation: AtomicU64,
}

#[derive(Debug)]
struct MemberState {
    topics: Vec<(Arc<str>, i32)>,
    shared: Arc<MemberShared>,
    target: BTreeSet<TopicPartition>,
    revoked_pending: BTreeSet<TopicPartition>,
}

#[derive(Debug, Default)]
struct GroupState {
    members: BTreeMap<u64, MemberState>,
}

impl GroupState {
    /// Deals the partitions out again and tells every member whose share changed.
    fn rebalance(&mut self) {
        let mut all: BTreeSet<TopicPartition> = BTreeSet::new();
        for m in self.members.values() {
            for (topic, n) in &m.topics {
                for p in 0..*n {
                    all.insert(TopicPartition::new(Arc::clone(topic), p));
                }
            }
        }
        let ids: Vec<u64> = self.members.keys().copied().collect();
        let mut next: HashMap<u64, BTreeSet<TopicPartition>> =
            ids.iter().map(|id| (*id, BTreeSet::new())).collect();
        let mut cursor = 0usize;
        for tp in all {
            for step in 0..ids.len() {
                let id = ids[(cursor + step) % ids.len()];
                let subscribed = self.members[&id].topics.iter().any(|(t, _)| *t == tp.topic);
                if subscribed {
                    if let Some(set) = next.get_mut(&id) {
                        set.insert(tp);
                    }
                    cursor = (cursor + step + 1) % ids.len();
                    break;
                }
            }
        }
        for (id, m) in &mut self.members {
            let new = next.remove(id).unwrap_or_default();
            if new == m.target {
                continue;
            }
            for lost in m.target.difference(&new) {
                m.revoked_pending.insert(lost.clone());
            }
            m.target = new;
            m.shared.generation.fetch_add(1, Ordering::AcqRel);
            m.shared.notify.notify_one();
        }
    }
}

/// The groups of one log.
#[derive(Debug, Default)]
pub(crate) struct Coordinator {
    groups: Mutex<HashMap<String, GroupState>>,
    next_member: AtomicU64,
}

impl Coordinator {
    fn join(&self, group: &str, topics: Vec<(Arc<str>, i32)>) -> (u64, Arc<MemberShared>) {
        let id = self.next_member.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(MemberShared {
            notify: Arc::new(Notify::new()),
            generation: AtomicU64::new(0),
        });
        let mut groups = self.groups.lock();
        let g = groups.entry(group.to_owned()).or_default();
        g.members.insert(
            id,
            MemberState {
                topics,
                shared: Arc::clone(&shared),
                target: BTreeSet::new(),
                revoked_pending: BTreeSet::new(),
            },
        );
        g.rebalance();
        (id, shared)
    }

    /// Wakes every member (the log is shutting down).
    pub(crate) fn wake_all(&self) {
        for g in self.groups.lock().values() {
            for m in g.members.values() {
                m.shared.notify.notify_one();
            }
        }
    }

    fn leave(&self, group: &str, id: u64) {
        let mut groups = self.groups.lock();
        if let Some(g) = groups.get_mut(group) {
            if g.members.remove(&id).is_some() {
                g.rebalance();
            }
            if g.members.is_empty() {
                groups.remove(group);
            }
        }
    }

    /// The member's target assignment and the revocations it has not seen yet.
    fn take_changes(
        &self,
        group: &str,
        id: u64,
    ) -> (BTreeSet<TopicPartition>, BTreeSet<TopicPartition>) {
        let mut groups = self.groups.lock();
        match groups.get_mut(group).and_then(|g| g.members.get_mut(&id)) {
            Some(m) => (m.target.clone(), std::mem::take(&mut m.revoked_pending)),
            None => (BTreeSet::new(), BTreeSet::new()),
        }
    }

    /// Whether the member may commit for `tp` now.
    fn owns(&self, group: &str, id: u64, tp: &TopicPartition) -> bool {
        let groups = self.groups.lock();
        groups
            .get(group)
            .and_then(|g| g.members.get(&id))
            .is_some_and(|m| m.target.contains(tp) && !m.revoked_pending.contains(tp))
    }
}

#[derive(Debug)]
struct Owned {
    part: Arc<PartitionLog>,
    position: Offset,
}

/// A member of a consumer group on the embedded log.
#[derive(Debug)]
pub(crate) struct EmbeddedConsumer {
    inner: Arc<Inner>,
    group: String,
    id: u64,
    shared: Arc<MemberShared>,
    offsets: Arc<GroupOffsets>,
    options: ConsumerOptions,
    owned: BTreeMap<TopicPartition, Owned>,
    seen_generation: u64,
    announced: bool,
    round_robin: usize,
    left: bool,
}

impl EmbeddedConsumer {
    pub(crate) fn join(inner: Arc<Inner>, options: ConsumerOptions) -> Result<Self, LogError> {
        if options.group.is_empty() {
            return Err(LogError::InvalidArgument(
                "consumer group name must not be empty".into(),
            ));
        }
        if options.topics.is_empty() {
            return Err(LogError::InvalidArgument(format!(
                "consumer of group {:?} subscribes to no topic",
                options.group
            )));
        }
        let mut topics = Vec::new();
        for name in &options.topics {
            let t = inner.topic(name)?;
            if !topics.iter().any(|(n, _): &(Arc<str>, i32)| **n == **name) {
                topics.push((Arc::clone(&t.name), t.partition_count()));
            }
        }
        let offsets = inner.offsets.group(&options.group)?;
        let (id, shared) = inner.coordinator.join(&options.group, topics);
        Ok(Self {
            group: options.group.clone(),
            inner,
            id,
            shared,
            offsets,
            options,
            owned: BTreeMap::new(),
            seen_generation: 0,
            announced: false,
            round_robin: 0,
            left: false,
        })
    }

    fn start_position(&self, part: &PartitionLog, tp: &TopicPartition) -> Result<Offset, LogError> {
        match self.offsets.get(tp) {
            Some(o) => part.resolve(StartAt::Offset(o)),
            None => part.resolve(self.options.start_if_uncommitted),
        }
    }

    /// An assignment change to report, if any.
    fn assignment_event(&mut self) -> Result<Option<ConsumerEvent>, LogError> {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if self.announced && generation == self.seen_generation {
            return Ok(None);
        }
        let (target, revoked_pending) = self.inner.coordinator.take_changes(&self.group, self.id);
        let revoked: Vec<TopicPartition> = self
            .owned
            .keys()
            .filter(|tp| revoked_pending.contains(*tp) || !target.contains(*tp))
            .cloned()
            .collect();
        if !revoked.is_empty() {
            for tp in &revoked {
                if let Some(o) = self.owned.remove(tp) {
                    o.part.unsubscribe(&self.shared.notify);
                }
            }
            // Report what was gained on the next poll.
            return Ok(Some(ConsumerEvent::Revoked(revoked)));
        }
        let gained: Vec<TopicPartition> = target
            .iter()
            .filter(|tp| !self.owned.contains_key(*tp))
            .cloned()
            .collect();
        self.seen_generation = generation;
        if gained.is_empty() && self.announced {
            return Ok(None);
        }
        for tp in &gained {
            let part = self.inner.partition(&tp.topic, tp.partition)?;
            let position = self.start_position(&part, tp)?;
            part.subscribe(&self.shared.notify);
            self.owned.insert(tp.clone(), Owned { part, position });
        }
        self.announced = true;
        Ok(Some(ConsumerEvent::Assigned(gained)))
    }

    /// Records available now from the owned partitions, fairly across partitions.
    async fn fetch(&mut self) -> Result<Vec<ConsumedRecord>, LogError> {
        let max = self.options.max_batch.max(1);
        let mut out: Vec<ConsumedRecord> = Vec::new();
        let n = self.owned.len();
        if n == 0 {
            return Ok(out);
        }
        let start = self.round_robin % n;
        self.round_robin = self.round_robin.wrapping_add(1);
        // Partitions from `start` on first, then the ones before it.
        for first_pass in [true, false] {
            for (i, o) in self.owned.values_mut().enumerate() {
                if (i >= start) != first_pass {
                    continue;
                }
                let want = max - out.len();
                if want == 0 {
                    return Ok(out);
                }
                let result = read_partition(&o.part, o.position, want).await?;
                o.position = result.next;
                out.extend(result.records);
            }
        }
        Ok(out)
    }

    fn leave(&mut self) {
        if self.left {
            return;
        }
        self.left = true;
        for o in self.owned.values() {
            o.part.unsubscribe(&self.shared.notify);
        }
        self.inner.coordinator.leave(&self.group, self.id);
    }
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        self.leave();
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn poll(&mut self, timeout: Duration) -> Result<ConsumerEvent, LogError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.inner.is_closed() {
                return Err(LogError::Closed);
            }
            if let Some(ev) = self.assignment_event()? {
                return Ok(ev);
            }
            let records = self.fetch().await?;
            if !records.is_empty() {
                return Ok(ConsumerEvent::Records(records));
            }
            let notified = self.shared.notify.notified();
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(ConsumerEvent::Records(Vec::new()));
            }
        }
    }

    async fn commit(&mut self, offsets: &[(TopicPartition, Offset)]) -> Result<(), LogError> {
        self.start_commit(offsets).await?.await
    }

    async fn start_commit(
        &mut self,
        offsets: &[(TopicPartition, Offset)],
    ) -> Result<Acknowledgement, LogError> {
        if self.inner.is_closed() {
            return Err(LogError::Closed);
        }
        for (tp, offset) in offsets {
            if !self.owned.contains_key(tp)
                || !self.inner.coordinator.owns(&self.group, self.id, tp)
            {
                return Err(LogError::NotAssigned(tp.clone()));
            }
            if *offset < 0 {
                return Err(LogError::InvalidArgument(format!(
                    "cannot commit negative offset {offset} for {tp}"
                )));
            }
        }
        if offsets.is_empty() {
            return Ok(imbus_log::acknowledged());
        }
        let (reply, rx) = oneshot::channel();
        // The writer stores commits in the order they are submitted.
        self.inner.writer.submit(Request::Commit {
            group: Arc::clone(&self.offsets),
            offsets: offsets.to_vec(),
            reply,
        })?;
        Ok(Box::pin(
            async move { rx.await.map_err(|_| LogError::Closed)? },
        ))
    }

    fn assignment(&self) -> Vec<TopicPartition> {
        self.owned.keys().cloned().collect()
    }

    async fn seek(&mut self, tp: &TopicPartition, start: StartAt) -> Result<(), LogError> {
        let Some(o) = self.owned.get(tp) else {
            return Err(LogError::NotAssigned(tp.clone()));
        };
        let part = Arc::clone(&o.part);
        let position = resolve(&part, start).await?;
        if let Some(o) = self.owned.get_mut(tp) {
            o.position = position;
        }
        Ok(())
    }

    async fn close(mut self: Box<Self>) -> Result<(), LogError> {
        self.leave();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(topics: &[(&str, i32)]) -> MemberState {
        MemberState {
            topics: topics.iter().map(|(t, n)| (Arc::from(*t), *n)).collect(),
            shared: Arc::new(MemberShared {
                notify: Arc::new(Notify::new()),
                generation: AtomicU64::new(0),
            }),
            target: BTreeSet::new(),
            revoked_pending: BTreeSet::new(),
        }
    }

    #[test]
    fn round_robin_is_deterministic_and_complete() {
        let mut g = GroupState::default();
        g.members.insert(1, member(&[("a", 3), ("b", 2)]));
        g.members.insert(2, member(&[("a", 3), ("b", 2)]));
        g.rebalance();
        let a: Vec<_> = g.members[&1].target.iter().map(|t| t.to_string()).collect();
        let b: Vec<_> = g.members[&2].target.iter().map(|t| t.to_string()).collect();
        assert_eq!(a, ["a/0", "a/2", "b/1"]);
        assert_eq!(b, ["a/1", "b/0"]);
        // Member 2 leaves: member 1 gets everything, nothing revoked from it.
        g.members.remove(&2);
        g.rebalance();
        assert_eq!(g.members[&1].target.len(), 5);
        assert!(g.members[&1].revoked_pending.is_empty());
    }

    #[test]
    fn only_subscribers_get_a_topic() {
        let mut g = GroupState::default();
        g.members.insert(1, member(&[("a", 2)]));
        g.members.insert(2, member(&[("b", 2)]));
        g.members.insert(3, member(&[("a", 2), ("b", 2)]));
        g.rebalance();
        for id in [1, 2, 3] {
            let m = &g.members[&id];
            assert!(
                m.target
                    .iter()
                    .all(|tp| m.topics.iter().any(|(t, _)| *t == tp.topic))
            );
        }
        let total: usize = g.members.values().map(|m| m.target.len()).sum();
        assert_eq!(total, 4);
    }

    #[test]
    fn a_joiner_takes_partitions_which_are_revoked_from_others() {
        let mut g = GroupState::default();
        g.members.insert(1, member(&[("a", 4)]));
        g.rebalance();
        assert_eq!(g.members[&1].target.len(), 4);
        g.members.insert(2, member(&[("a", 4)]));
        g.rebalance();
        assert_eq!(g.members[&1].target.len(), 2);
        assert_eq!(g.members[&1].revoked_pending.len(), 2);
        assert!(
            g.members[&1]
                .revoked_pending
                .is_disjoint(&g.members[&1].target)
        );
        assert_eq!(g.members[&2].target, g.members[&1].revoked_pending);
    }
}
