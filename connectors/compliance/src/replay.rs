//! Replaying the `compliance` topic into a database for a time range: rebuilding an
//! archive, or filling a new one. Writes are idempotent, so replaying into a database that
//! already holds some of the rows adds only the missing ones.

use imbus_config::topics::COMPLIANCE;
use imbus_core::Event;
use imbus_log::{Log, LogError, StartAt};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::db::{Database, DbError};
use crate::row::{Decision, Row, decide};
use crate::settings::SinkSettings;

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Records read in the time range.
    pub read: u64,
    /// Rows added to the database.
    pub written: u64,
    /// Rows that were already there.
    pub already_present: u64,
    /// Records not archived under the settings (direction, kinds).
    pub skipped: u64,
    /// Records that cannot be archived (undecodable, or refused by the database).
    pub refused: u64,
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("log: {0}")]
    Log(#[from] LogError),
    #[error("database: {0}")]
    Database(#[from] DbError),
}

/// A refused record: where it is on the log, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
}

/// Parses an RFC 3339 date-time (`2026-12-01T00:00:00Z`) into microseconds since the
/// epoch.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let t = OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|e| {
        format!("{text:?} is not an RFC 3339 date-time such as 2026-12-01T00:00:00Z: {e}")
    })?;
    i64::try_from(t.unix_timestamp_nanos() / 1000).map_err(|_| format!("{text:?} is out of range"))
}

/// Writes every record of the `compliance` topic whose message time is in
/// `[from_micros, to_micros)` into `db` (creating its tables if needed), under `settings`.
/// `progress` is called after every batch; `refused` for each record not archived.
pub async fn replay(
    log: &dyn Log,
    db: &Database,
    from_micros: i64,
    to_micros: i64,
    settings: &SinkSettings,
    mut progress: impl FnMut(i32, &ReplaySummary),
    mut refused: impl FnMut(Refused),
) -> Result<ReplaySummary, ReplayError> {
    db.migrate().await?;
    // The archive's own cut-over: a replayed record gets the id it was first written with.
    let ids = db.record_ids().await?;
    let mut summary = ReplaySummary::default();
    let partitions = log.partition_count(COMPLIANCE).await?;
    // A record's log time is never before its message time, so the first record of the
    // range is at or after the log offset for `from`.
    let from_ms = from_micros.div_euclid(1000);
    for partition in 0..partitions {
        let Some(start) = log
            .offset_for_timestamp(COMPLIANCE, partition, from_ms)
            .await?
        else {
            continue;
        };
        let end = log.watermarks(COMPLIANCE, partition).await?.high;
        let mut reader = log
            .reader(COMPLIANCE, partition, StartAt::Offset(start))
            .await?;
        let stall = imbus_log::READ_STALL_LIMIT;
        while let Some(records) = imbus_log::read_before(reader.as_mut(), end, 500, stall).await? {
            let mut rows: Vec<(i64, Row)> = Vec::new();
            for record in records.iter() {
                let decoded = match record.value.as_deref().map(imbus_schemas::decode) {
                    Some(Ok(Event::Compliance(c))) => c,
                    Some(Ok(_)) | Some(Err(_)) | None => {
                        summary.read += 1;
                        summary.refused += 1;
                        refused(Refused {
                            partition,
                            offset: record.offset,
                            reason: "not a decodable ComplianceRecord".to_owned(),
                        });
                        continue;
                    }
                };
                let t = decoded.timestamp.as_micros();
                if t < from_micros || t >= to_micros {
                    continue;
                }
                summary.read += 1;
                match decide(&decoded, settings, ids) {
                    Decision::Archive(row) => rows.push((record.offset, *row)),
                    Decision::Skip(_) => summary.skipped += 1,
                    Decision::Reject(reason) => {
                        summary.refused += 1;
                        refused(Refused {
                            partition,
                            offset: record.offset,
                            reason,
                        });
                    }
                }
            }
            let all: Vec<&Row> = rows.iter().map(|(_, r)| r).collect();
            match db.write(&all).await {
                Ok(w) => {
                    summary.written += w.jm + w.tc_msgarchive;
                    summary.already_present += w.already_present;
                }
                Err(DbError::Rejected(_)) => {
                    for (offset, row) in &rows {
                        match db.write(&[row]).await {
                            Ok(w) => {
                                summary.written += w.jm + w.tc_msgarchive;
                                summary.already_present += w.already_present;
                            }
                            Err(DbError::Rejected(reason)) => {
                                summary.refused += 1;
                                refused(Refused {
                                    partition,
                                    offset: *offset,
                                    reason,
                                });
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
            progress(partition, &summary);
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z").unwrap(), 1_000_000);
        assert_eq!(
            parse_time("2026-12-01T01:00:00.5+01:00").unwrap(),
            1_796_083_200_500_000
        );
        let e = parse_time("yesterday").unwrap_err();
        assert!(e.contains("yesterday") && e.contains("RFC 3339"), "{e}");
    }
}
