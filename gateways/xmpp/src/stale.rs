//! Sessions left open by an earlier run of this gateway.
//!
//! A gateway that was killed (or whose machine died) could not record the end of its
//! sessions. Its connections are gone all the same, so before it accepts new ones the
//! gateway closes, on `sessions`, every session the log still shows bound to its id:
//! processors then send `unavailable` to the contacts and stop routing to them.

use std::collections::HashMap;

use imbus_core::{
    CloseReason, Event, GatewayId, SessionClosed, SessionEvent, SessionState, Timestamp,
};
use imbus_log::{Log, LogError, Partition, Record, StartAt};

use crate::gateway::SESSIONS;

/// Records `Closed` for every session of `gateway_id` that the `sessions` changelog still
/// shows bound, and returns how many there were.
pub async fn close_stale_sessions(
    log: &dyn Log,
    gateway_id: &GatewayId,
) -> Result<usize, LogError> {
    let partitions = log.partition_count(SESSIONS).await?;
    let now = Timestamp::now();
    let mut closed = 0;
    for partition in 0..partitions {
        let open = bound_sessions(log, partition, gateway_id).await?;
        for (key, state) in open {
            let event = Event::Session(SessionEvent::Closed(SessionClosed {
                jid: state.jid,
                gateway_id: state.gateway_id,
                session_id: state.session_id,
                at: now,
                reason: CloseReason::ConnectionLost,
                detail: Some("the gateway stopped without closing the session".to_owned()),
            }));
            let value = match imbus_schemas::encode(&event) {
                Ok(value) => value,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot encode a session close; skipped");
                    continue;
                }
            };
            log.append_to(SESSIONS, partition, Record::new(key, value))
                .await?;
            closed += 1;
        }
    }
    if closed > 0 {
        tracing::info!(
            gateway = gateway_id.as_str(),
            sessions = closed,
            "closed the sessions an earlier run of this gateway left open"
        );
    }
    Ok(closed)
}

/// The sessions of `gateway_id` bound in one partition, by compaction key (the full JID).
async fn bound_sessions(
    log: &dyn Log,
    partition: Partition,
    gateway_id: &GatewayId,
) -> Result<HashMap<Vec<u8>, SessionState>, LogError> {
    let end = log.watermarks(SESSIONS, partition).await?.high;
    let mut reader = log.reader(SESSIONS, partition, StartAt::Earliest).await?;
    let mut open: HashMap<Vec<u8>, SessionState> = HashMap::new();
    let stall = imbus_log::READ_STALL_LIMIT;
    while let Some(records) = imbus_log::read_before(reader.as_mut(), end, 1024, stall).await? {
        for record in records {
            let Some(key) = record.key else { continue };
            let Some(value) = record.value else {
                open.remove(key.as_ref());
                continue;
            };
            match imbus_schemas::decode(&value) {
                Ok(Event::Session(SessionEvent::Bound(state))) => {
                    if &state.gateway_id == gateway_id {
                        open.insert(key.to_vec(), state);
                    } else {
                        open.remove(key.as_ref());
                    }
                }
                Ok(Event::Session(SessionEvent::Closed(_))) => {
                    open.remove(key.as_ref());
                }
                // Presence records of the router live under their own keys.
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(partition, offset = record.offset, error = %e, "undecodable session record; skipped");
                }
            }
        }
    }
    Ok(open)
}
