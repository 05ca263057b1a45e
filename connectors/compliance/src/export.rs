//! Reading the archive back for one user and a time range (an audit export): every row
//! where the user is the recipient or the sender, in time order.

use sqlx::QueryBuilder;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::db::{Database, DbError, classify};
use crate::settings::Backend;

/// One archived row as exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedRow {
    /// `JM` or `TC_MSGARCHIVE`.
    pub table: String,
    pub record_id: String,
    /// The message's event id (`msg_id` in `TC_MSGARCHIVE`).
    pub event_id: String,
    /// RFC 3339, UTC.
    pub sent_date: String,
    pub to_jid: String,
    pub from_jid: String,
    pub room_jid: Option<String>,
    pub nickname: Option<String>,
    pub msg_type: String,
    pub direction: String,
    pub subject: Option<String>,
    pub thread_id: Option<String>,
    pub body_text: Option<String>,
    pub message_text: String,
}

/// The CSV header of [`ExportedRow::csv`].
pub const CSV_HEADER: &str = "table,record_id,event_id,sent_date,to_jid,from_jid,room_jid,nickname,msg_type,direction,subject,thread_id,body_text,message_text";

impl ExportedRow {
    /// The row as one CSV record (RFC 4180: fields with commas, quotes or line breaks
    /// quoted, quotes doubled), without the line end.
    pub fn csv(&self) -> String {
        let o = |v: &Option<String>| v.as_deref().map(csv_field).unwrap_or_default();
        [
            csv_field(&self.table),
            csv_field(&self.record_id),
            csv_field(&self.event_id),
            csv_field(&self.sent_date),
            csv_field(&self.to_jid),
            csv_field(&self.from_jid),
            o(&self.room_jid),
            o(&self.nickname),
            csv_field(&self.msg_type),
            csv_field(&self.direction),
            o(&self.subject),
            o(&self.thread_id),
            o(&self.body_text),
            csv_field(&self.message_text),
        ]
        .join(",")
    }
}

/// One CSV field, quoted when needed.
pub fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) || value.starts_with(' ') || value.ends_with(' ') {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// A LIKE pattern matching `prefix` followed by anything, with `!` as escape character.
fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 2);
    for c in prefix.chars() {
        if matches!(c, '!' | '%' | '_') {
            out.push('!');
        }
        out.push(c);
    }
    out.push('%');
    out
}

fn utc(micros: i64) -> Result<OffsetDateTime, DbError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000).map_err(|e| {
        DbError::Config {
            url: String::new(),
            detail: format!("time out of range: {e}"),
        }
    })
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

type Tuple<T> = (
    String,
    String,
    String,
    T,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

fn from_tuple<T>(t: Tuple<T>, date: impl Fn(T) -> String) -> ExportedRow {
    ExportedRow {
        table: t.0,
        record_id: t.1,
        event_id: t.2,
        sent_date: date(t.3),
        to_jid: t.4,
        from_jid: t.5,
        room_jid: t.6,
        nickname: t.7,
        msg_type: t.8,
        direction: t.9,
        subject: t.10,
        thread_id: t.11,
        body_text: t.12,
        message_text: t.13,
    }
}

/// The SELECT of both tables for one user and time range; `cast` wraps text columns
/// (MySQL reads binary-collated columns as bytes otherwise).
macro_rules! export_query {
    ($db:ty, $user:expr, $from:expr, $to:expr, $cast:expr) => {{
        let cast: fn(&str) -> String = $cast;
        let mut q = QueryBuilder::<$db>::new("");
        for (i, (table, event, room, nick, thread)) in [
            ("JM", "event_id", "NULL", "NULL", "thread_id"),
            ("TC_MSGARCHIVE", "msg_id", "room_jid", "nickname", "NULL"),
        ]
        .into_iter()
        .enumerate()
        {
            if i > 0 {
                q.push(" UNION ALL ");
            }
            q.push(format!(
                "SELECT {}, {}, {}, sent_date, {}, {}, {}, {}, {}, {}, {}, {}, {}, {} FROM {table} WHERE (to_jid = ",
                cast(&format!("'{table}'")),
                cast("record_id"),
                cast(event),
                cast("to_jid"),
                cast("from_jid"),
                cast(room),
                cast(nick),
                cast("msg_type"),
                cast("direction"),
                cast("subject"),
                cast(thread),
                cast("body_text"),
                cast("message_text"),
            ));
            q.push_bind($user.to_owned());
            q.push(" OR from_jid = ");
            q.push_bind($user.to_owned());
            q.push(" OR from_jid LIKE ");
            q.push_bind(like_prefix(&format!("{}/", $user)));
            q.push(" ESCAPE '!') AND sent_date >= ");
            q.push_bind($from);
            q.push(" AND sent_date < ");
            q.push_bind($to);
        }
        q.push(" ORDER BY 4, 2");
        q
    }};
}

/// Every archived row where `user` (a bare JID) is the recipient or the sender, with a
/// message time in `[from_micros, to_micros)`, oldest first.
pub async fn export(
    db: &Database,
    user: &str,
    from_micros: i64,
    to_micros: i64,
) -> Result<Vec<ExportedRow>, DbError> {
    let (from, to) = (utc(from_micros)?, utc(to_micros)?);
    match db {
        Database::Postgres(pool) => {
            let mut q = export_query!(sqlx::Postgres, user, from, to, |c| if c == "NULL" {
                "NULL::text".to_owned()
            } else {
                c.to_owned()
            });
            let rows: Vec<Tuple<OffsetDateTime>> = q
                .build_query_as()
                .fetch_all(pool)
                .await
                .map_err(|e| classify(Backend::Postgres, e))?;
            Ok(rows.into_iter().map(|t| from_tuple(t, rfc3339)).collect())
        }
        Database::MySql(pool) => {
            let prim = |t: OffsetDateTime| PrimitiveDateTime::new(t.date(), t.time());
            let mut q = export_query!(sqlx::MySql, user, prim(from), prim(to), |c| format!(
                "CAST({c} AS CHAR)"
            ));
            let rows: Vec<Tuple<PrimitiveDateTime>> = q
                .build_query_as()
                .fetch_all(pool)
                .await
                .map_err(|e| classify(Backend::MySql, e))?;
            Ok(rows
                .into_iter()
                .map(|t| from_tuple(t, |d| rfc3339(d.assume_utc())))
                .collect())
        }
        Database::Sqlite(pool) => {
            let mut q = export_query!(sqlx::Sqlite, user, from, to, |c| c.to_owned());
            let rows: Vec<Tuple<OffsetDateTime>> = q
                .build_query_as()
                .fetch_all(pool)
                .await
                .map_err(|e| classify(Backend::Sqlite, e))?;
            Ok(rows.into_iter().map(|t| from_tuple(t, rfc3339)).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field(" padded"), "\" padded\"");
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_prefix("a_b%c!d/"), "a!_b!%c!!d/%");
    }
}
