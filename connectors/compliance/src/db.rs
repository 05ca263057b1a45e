//! The archive database: connection pools, migrations and idempotent batched inserts,
//! one implementation per backend.

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, Postgres};
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Executor, QueryBuilder};
use time::PrimitiveDateTime;

use crate::row::{RecordIds, Row, Table};
use crate::settings::{Backend, redact_url};

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static MYSQL_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The `imbus_compliance_meta` entry of the record id cut-over ([`RecordIds`]).
const ORDERED_AFTER: &str = "ordered_record_ids_after";
/// An archive that already holds rows when it first meets ordered record ids keeps the
/// legacy form for records up to this long after (clocks that run ahead).
const CUT_OVER_MARGIN_MICROS: i64 = 3_600_000_000;

/// Most rows in one INSERT statement (15 parameters each stays under every backend's
/// parameter limit).
const MAX_ROWS_PER_STATEMENT: usize = 50;
/// Most bytes of text in one INSERT statement (well under MariaDB's default
/// `max_allowed_packet` of 16 MiB); a larger row goes alone.
const MAX_BYTES_PER_STATEMENT: usize = 4 << 20;
/// Longest a database operation may take before it counts as failed (a database that
/// stopped answering without closing the connection).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the sink waits for a free connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// A database failure, sorted by what the sink does about it.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL or options are wrong: nothing to retry.
    #[error("invalid database URL {url}: {detail}")]
    Config { url: String, detail: String },
    /// The database is unreachable or failing (connection refused or lost, timeout,
    /// lock, disk full, server shutting down): retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The database refuses the data itself (encoding, value too long, constraint): the
    /// same rows will always fail.
    #[error("{0}")]
    Rejected(String),
}

impl DbError {
    /// Whether the same operation can succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, DbError::Unavailable(_))
    }
}

/// Rows a write added, and rows that were already there (a redelivery).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub jm: u64,
    pub tc_msgarchive: u64,
    pub already_present: u64,
}

impl Written {
    fn add(&mut self, table: Table, inserted: u64, present: u64) {
        match table {
            Table::Jm => self.jm += inserted,
            Table::TcMsgArchive => self.tc_msgarchive += inserted,
        }
        self.already_present += present;
    }
}

/// The archive database.
#[derive(Debug, Clone)]
pub enum Database {
    Postgres(PgPool),
    MySql(MySqlPool),
    Sqlite(SqlitePool),
}

/// Decides whether a database error is about the data (the same rows always fail) or
/// about the database (retry later).
pub fn classify(backend: Backend, error: sqlx::Error) -> DbError {
    let text = error.to_string();
    let rejected = match &error {
        sqlx::Error::Encode(_) => true,
        sqlx::Error::Database(db) => match backend {
            // SQLSTATE class 22 (data exception: invalid byte sequence such as NUL, value
            // too long, datetime out of range), 23 (integrity constraint), 54 (program
            // limit exceeded, such as an index row too large).
            Backend::Postgres => db
                .code()
                .is_some_and(|c| c.starts_with("22") || c.starts_with("23") || c.starts_with("54")),
            Backend::MySql => {
                let number = db
                    .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .map(|e| e.number());
                let sqlstate = db.code();
                matches!(
                    number,
                    // incorrect string value, data too long, out of range, incorrect
                    // datetime, column cannot be null, no default, data truncated,
                    // invalid character string, packet too large, row size too large
                    Some(
                        1366 | 1406 | 1264 | 1292 | 1048 | 1364 | 1265 | 1300 | 1153 | 1118 | 1301
                    )
                ) || sqlstate.is_some_and(|c| c.starts_with("22") || c.starts_with("23"))
            }
            // SQLITE_TOOBIG 18, SQLITE_CONSTRAINT 19, SQLITE_MISMATCH 20, SQLITE_RANGE 25
            // (primary codes of the extended code).
            Backend::Sqlite => db
                .code()
                .and_then(|c| c.parse::<i64>().ok())
                .is_some_and(|c| matches!(c & 0xff, 18 | 19 | 20 | 25)),
        },
        _ => false,
    };
    if rejected {
        DbError::Rejected(text)
    } else {
        DbError::Unavailable(text)
    }
}

async fn timed<T>(
    backend: Backend,
    what: &str,
    fut: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, DbError> {
    match tokio::time::timeout(OPERATION_TIMEOUT, fut).await {
        Ok(result) => result.map_err(|e| classify(backend, e)),
        Err(_) => Err(DbError::Unavailable(format!(
            "{what} did not finish within {} s",
            OPERATION_TIMEOUT.as_secs()
        ))),
    }
}

impl Database {
    /// Prepares a pool for `url` without connecting (connections are opened when first
    /// needed, so a database that is down at start only delays archiving).
    pub fn open(url: &str, pool_size: u32) -> Result<Database, DbError> {
        Database::open_for(url, pool_size, "imbus-compliance")
    }

    /// [`Database::open`] for another component: the same pool set-up (MySQL strict mode,
    /// `utf8mb4` and UTC; SQLite WAL with full fsync; bounded waits for a connection),
    /// with `application_name` naming the component's connections on PostgreSQL.
    ///
    /// On SQLite the pool holds one connection whatever `pool_size` says: SQLite writes one
    /// transaction at a time, and a connection's page cache stays valid only while no other
    /// connection writes (with two used in turn, each write found the cache of the
    /// connection it got stale and read the index pages back from the file).
    pub fn open_for(
        url: &str,
        pool_size: u32,
        application_name: &str,
    ) -> Result<Database, DbError> {
        let config_error = |detail: String| DbError::Config {
            url: redact_url(url),
            detail,
        };
        let backend = Backend::of_url(url).ok_or_else(|| {
            config_error(
                "expected postgres://, postgresql://, mysql://, mariadb:// or sqlite:".into(),
            )
        })?;
        let pool_size = match backend {
            Backend::Sqlite => 1,
            _ => pool_size.max(1),
        };
        Ok(match backend {
            Backend::Postgres => {
                let options =
                    PgConnectOptions::from_str(url).map_err(|e| config_error(e.to_string()))?;
                Database::Postgres(
                    PgPoolOptions::new()
                        .max_connections(pool_size)
                        .acquire_timeout(ACQUIRE_TIMEOUT)
                        .connect_lazy_with(options.application_name(application_name)),
                )
            }
            Backend::MySql => {
                // sqlx's URL parser accepts any scheme; `mariadb://` is MySQL's protocol.
                let normalized = match url.strip_prefix("mariadb://") {
                    Some(rest) => format!("mysql://{rest}"),
                    None => url.to_owned(),
                };
                let options = MySqlConnectOptions::from_str(&normalized)
                    .map_err(|e| config_error(e.to_string()))?
                    .charset("utf8mb4")
                    .timezone(Some("+00:00".to_owned()));
                Database::MySql(
                    MySqlPoolOptions::new()
                        .max_connections(pool_size)
                        .acquire_timeout(ACQUIRE_TIMEOUT)
                        .after_connect(|conn, _| {
                            Box::pin(async move {
                                // Strict mode: a value that does not fit is an error,
                                // never silently cut.
                                conn.execute(
                                    "SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')",
                                )
                                .await?;
                                Ok(())
                            })
                        })
                        .connect_lazy_with(options),
                )
            }
            Backend::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(|e| config_error(e.to_string()))?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // A committed batch survives a power loss before its offset is
                    // committed on the log.
                    .synchronous(SqliteSynchronous::Full)
                    // 64 MiB of page cache instead of SQLite's 2 MiB: the indexes of a
                    // growing archive (random record ids) otherwise leave most of their
                    // pages outside the cache, and every insert reads them back.
                    .pragma("cache_size", "-65536")
                    .pragma("temp_store", "memory")
                    .busy_timeout(Duration::from_secs(5));
                Database::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(pool_size)
                        .acquire_timeout(ACQUIRE_TIMEOUT)
                        .connect_lazy_with(options),
                )
            }
        })
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            Database::Postgres(_) => Backend::Postgres,
            Database::MySql(_) => Backend::MySql,
            Database::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Creates the archive tables, or upgrades them to this version's schema.
    pub async fn migrate(&self) -> Result<(), DbError> {
        let backend = self.backend();
        let run = async {
            match self {
                Database::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await,
                Database::MySql(p) => MYSQL_MIGRATIONS.run(p).await,
                Database::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await,
            }
        };
        match tokio::time::timeout(OPERATION_TIMEOUT, run).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(sqlx::migrate::MigrateError::Execute(e))) => Err(DbError::Unavailable(format!(
                "schema migration failed: {}",
                classify(backend, e)
            ))),
            Ok(Err(e)) => Err(DbError::Unavailable(format!(
                "schema migration failed: {e}"
            ))),
            Err(_) => Err(DbError::Unavailable(format!(
                "schema migration did not finish within {} s",
                OPERATION_TIMEOUT.as_secs()
            ))),
        }
    }

    /// The archive's record id cut-over ([`RecordIds`]): read from
    /// `imbus_compliance_meta`, or decided now and stored when the archive has none yet
    /// (every record ordered in an empty archive; records up to an hour from now keep the
    /// legacy form in one that already holds rows). Of two sinks deciding at once, the
    /// first one's value is stored and both use it. Needs [`Database::migrate`] first.
    pub async fn record_ids(&self) -> Result<RecordIds, DbError> {
        if let Some(ids) = self.stored_record_ids().await? {
            return Ok(ids);
        }
        let empty =
            self.table_is_empty("JM").await? && self.table_is_empty("TC_MSGARCHIVE").await?;
        let after = if empty {
            i64::MIN
        } else {
            let now = i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_micros(),
            )
            .unwrap_or(i64::MAX);
            now.saturating_add(CUT_OVER_MARGIN_MICROS)
        };
        let backend = self.backend();
        let value = after.to_string();
        const WHAT: &str = "storing the record id cut-over";
        match self {
            Database::Postgres(p) => {
                let q = sqlx::query("INSERT INTO imbus_compliance_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                    .bind(ORDERED_AFTER)
                    .bind(&value);
                timed(backend, WHAT, q.execute(p)).await?;
            }
            Database::MySql(p) => {
                let q = sqlx::query(
                    "INSERT IGNORE INTO imbus_compliance_meta (name, value) VALUES (?, ?)",
                )
                .bind(ORDERED_AFTER)
                .bind(&value);
                timed(backend, WHAT, q.execute(p)).await?;
            }
            Database::Sqlite(p) => {
                let q = sqlx::query("INSERT INTO imbus_compliance_meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING")
                    .bind(ORDERED_AFTER)
                    .bind(&value);
                timed(backend, WHAT, q.execute(p)).await?;
            }
        }
        self.stored_record_ids()
            .await?
            .ok_or_else(|| DbError::Unavailable("the record id cut-over was not stored".to_owned()))
    }

    async fn stored_record_ids(&self) -> Result<Option<RecordIds>, DbError> {
        let backend = self.backend();
        const WHAT: &str = "reading the record id cut-over";
        let value: Option<String> = match self {
            Database::Postgres(p) => {
                let q =
                    sqlx::query_scalar("SELECT value FROM imbus_compliance_meta WHERE name = $1")
                        .bind(ORDERED_AFTER);
                timed(backend, WHAT, q.fetch_optional(p)).await?
            }
            Database::MySql(p) => {
                let q =
                    sqlx::query_scalar("SELECT value FROM imbus_compliance_meta WHERE name = ?")
                        .bind(ORDERED_AFTER);
                timed(backend, WHAT, q.fetch_optional(p)).await?
            }
            Database::Sqlite(p) => {
                let q =
                    sqlx::query_scalar("SELECT value FROM imbus_compliance_meta WHERE name = ?")
                        .bind(ORDERED_AFTER);
                timed(backend, WHAT, q.fetch_optional(p)).await?
            }
        };
        value
            .map(|v| {
                v.trim()
                    .parse::<i64>()
                    .map(|ordered_after_micros| RecordIds {
                        ordered_after_micros,
                    })
                    .map_err(|_| {
                        DbError::Rejected(format!(
                            "imbus_compliance_meta.{ORDERED_AFTER} is {v:?}, not a time in µs since the epoch"
                        ))
                    })
            })
            .transpose()
    }

    async fn table_is_empty(&self, table: &str) -> Result<bool, DbError> {
        let backend = self.backend();
        let sql = format!("SELECT 1 FROM {table} LIMIT 1");
        let found = match self {
            Database::Postgres(p) => timed(backend, &sql, p.fetch_optional(sql.as_str()))
                .await?
                .is_some(),
            Database::MySql(p) => timed(backend, &sql, p.fetch_optional(sql.as_str()))
                .await?
                .is_some(),
            Database::Sqlite(p) => timed(backend, &sql, p.fetch_optional(sql.as_str()))
                .await?
                .is_some(),
        };
        Ok(!found)
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), DbError> {
        let backend = self.backend();
        match self {
            Database::Postgres(p) => {
                timed(backend, "SELECT 1", p.execute("SELECT 1")).await?;
            }
            Database::MySql(p) => {
                timed(backend, "SELECT 1", p.execute("SELECT 1")).await?;
            }
            Database::Sqlite(p) => {
                timed(backend, "SELECT 1", p.execute("SELECT 1")).await?;
            }
        }
        Ok(())
    }

    /// Writes rows in one transaction; rows already present (same record id) are left as
    /// they are. Either every row is stored when this returns `Ok`, or none.
    pub async fn write(&self, rows: &[&Row]) -> Result<Written, DbError> {
        if rows.is_empty() {
            return Ok(Written::default());
        }
        let backend = self.backend();
        match self {
            Database::Postgres(p) => {
                timed(backend, "writing a batch", write_postgres(p, rows)).await
            }
            Database::MySql(p) => timed(backend, "writing a batch", write_mysql(p, rows)).await,
            Database::Sqlite(p) => timed(backend, "writing a batch", write_sqlite(p, rows)).await,
        }
    }

    /// Writes rows over up to `parallelism` connections at once, each share in its own
    /// transaction (PostgreSQL and MySQL; SQLite has a single writer and takes the rows in
    /// one transaction). Rows already present are left as they are. When this returns
    /// `Ok` every row is stored; after an error some shares may be stored and others not,
    /// which a retry of the same rows recognises (they count as already present).
    pub async fn write_parallel(
        &self,
        rows: &[&Row],
        parallelism: usize,
    ) -> Result<Written, DbError> {
        let shares = match self {
            Database::Sqlite(_) => 1,
            _ => parallelism.clamp(1, rows.len().div_ceil(MIN_ROWS_PER_SHARE).max(1)),
        };
        if shares == 1 {
            return self.write(rows).await;
        }
        let per_share = rows.len().div_ceil(shares);
        let writes = rows.chunks(per_share).map(|share| self.write(share));
        let mut total = Written::default();
        for written in futures::future::try_join_all(writes).await? {
            total.jm += written.jm;
            total.tc_msgarchive += written.tc_msgarchive;
            total.already_present += written.already_present;
        }
        Ok(total)
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match self {
            Database::Postgres(p) => p.close().await,
            Database::MySql(p) => p.close().await,
            Database::Sqlite(p) => p.close().await,
        }
    }
}

/// [`Database::write_parallel`] does not split a batch into shares smaller than this: a
/// transaction per handful of rows would cost more than it saves.
const MIN_ROWS_PER_SHARE: usize = 250;

/// The rows of one table in statements of bounded size.
fn statements<'r>(rows: &[&'r Row]) -> Vec<(Table, Vec<&'r Row>)> {
    let mut out: Vec<(Table, Vec<&'r Row>)> = Vec::new();
    for table in [Table::Jm, Table::TcMsgArchive] {
        let mut current: Vec<&Row> = Vec::new();
        let mut bytes = 0;
        for row in rows.iter().filter(|r| r.table == table) {
            if !current.is_empty()
                && (current.len() >= MAX_ROWS_PER_STATEMENT
                    || bytes + row.weight() > MAX_BYTES_PER_STATEMENT)
            {
                out.push((table, std::mem::take(&mut current)));
                bytes = 0;
            }
            bytes += row.weight();
            current.push(row);
        }
        if !current.is_empty() {
            out.push((table, current));
        }
    }
    out
}

const JM_COLUMNS: &str = "record_id, event_id, to_jid, from_jid, sent_date, subject, thread_id, msg_type, direction, origin, body_len, message_len, body_text, message_text";
const TC_COLUMNS: &str = "record_id, msg_id, room_jid, to_jid, from_jid, nickname, sent_date, subject, msg_type, direction, origin, body_len, message_len, body_text, message_text";

fn columns(table: Table) -> &'static str {
    match table {
        Table::Jm => JM_COLUMNS,
        Table::TcMsgArchive => TC_COLUMNS,
    }
}

/// Builds `INSERT INTO <table> (<columns>) VALUES (...), (...)` for one backend; the
/// sent date is bound as `$date` (each backend has its own time type).
macro_rules! insert_builder {
    ($db:ty, $table:expr, $rows:expr, $date:expr) => {{
        let table: Table = $table;
        let mut q = QueryBuilder::<$db>::new(format!(
            "INSERT INTO {} ({}) ",
            table.name(),
            columns(table)
        ));
        q.push_values($rows.iter(), |mut b, row| {
            b.push_bind(row.record_id.to_string());
            b.push_bind(row.event_id.to_string());
            if table == Table::TcMsgArchive {
                b.push_bind(row.room_jid.clone());
            }
            b.push_bind(row.to_jid.clone());
            b.push_bind(row.from_jid.clone());
            if table == Table::TcMsgArchive {
                b.push_bind(row.nickname.clone());
            }
            b.push_bind($date(row));
            b.push_bind(row.subject.clone());
            if table == Table::Jm {
                b.push_bind(row.thread_id.clone());
            }
            b.push_bind(row.msg_type);
            b.push_bind(row.direction);
            b.push_bind(row.origin);
            b.push_bind(row.body_len);
            b.push_bind(row.message_len);
            b.push_bind(row.body_text.clone());
            b.push_bind(row.message_text.clone());
        });
        q
    }};
}

async fn write_postgres(pool: &PgPool, rows: &[&Row]) -> Result<Written, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut written = Written::default();
    for (table, chunk) in statements(rows) {
        let mut q = insert_builder!(Postgres, table, chunk, |r: &Row| r.sent_date);
        q.push(" ON CONFLICT (record_id) DO NOTHING");
        let inserted = q.build().execute(&mut *tx).await?.rows_affected();
        written.add(table, inserted, chunk.len() as u64 - inserted);
    }
    tx.commit().await?;
    Ok(written)
}

async fn write_sqlite(pool: &SqlitePool, rows: &[&Row]) -> Result<Written, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut written = Written::default();
    for (table, chunk) in statements(rows) {
        let mut q = insert_builder!(Sqlite, table, chunk, |r: &Row| r.sent_date);
        q.push(" ON CONFLICT (record_id) DO NOTHING");
        let inserted = q.build().execute(&mut *tx).await?.rows_affected();
        written.add(table, inserted, chunk.len() as u64 - inserted);
    }
    tx.commit().await?;
    Ok(written)
}

async fn write_mysql(pool: &MySqlPool, rows: &[&Row]) -> Result<Written, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut written = Written::default();
    for (table, chunk) in statements(rows) {
        // MySQL reports a row found by ON DUPLICATE KEY as affected, so rows already
        // present are counted first (in the same transaction).
        let mut count = QueryBuilder::<MySql>::new(format!(
            "SELECT COUNT(*) FROM {} WHERE record_id IN (",
            table.name()
        ));
        let mut ids = count.separated(", ");
        for row in &chunk {
            ids.push_bind(row.record_id.to_string());
        }
        count.push(")");
        let present: i64 = count.build_query_scalar().fetch_one(&mut *tx).await?;
        let present = u64::try_from(present).unwrap_or(0);
        let mut q = insert_builder!(MySql, table, chunk, |r: &Row| PrimitiveDateTime::new(
            r.sent_date.date(),
            r.sent_date.time()
        ));
        // Not INSERT IGNORE: that would turn a value too long into a warning and cut it.
        q.push(" ON DUPLICATE KEY UPDATE record_id = record_id");
        q.build().execute(&mut *tx).await?;
        written.add(table, (chunk.len() as u64).saturating_sub(present), present);
    }
    tx.commit().await?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::{Decision, decide};
    use crate::settings::SinkSettings;
    use imbus_core::{BareJid, ComplianceRecord, Direction, Jid, MessageType, Origin, Timestamp};
    use uuid::Uuid;

    fn row(n: u128, kind: MessageType, body: usize) -> Row {
        let record = ComplianceRecord {
            event_id: Uuid::from_u128(n),
            recipient: BareJid::new("bob@example.com").unwrap(),
            sender: Jid::new("alice@example.com/a").unwrap(),
            direction: Direction::Inbound,
            timestamp: Timestamp::from_micros(1),
            message_type: kind,
            thread: None,
            subject: None,
            body: Some("x".repeat(body)),
            room: None,
            nickname: None,
            xml: "<message/>".into(),
            origin: Origin::Local,
        };
        match decide(&record, &SinkSettings::default(), RecordIds::ORDERED) {
            Decision::Archive(r) => *r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn statements_are_per_table_and_bounded() {
        let rows: Vec<Row> = (0..120)
            .map(|i| {
                let kind = if i % 3 == 0 {
                    MessageType::Groupchat
                } else {
                    MessageType::Chat
                };
                row(i, kind, 10)
            })
            .chain([
                row(500, MessageType::Chat, 3 << 20),
                row(501, MessageType::Chat, 3 << 20),
            ])
            .collect();
        let refs: Vec<&Row> = rows.iter().collect();
        let statements = statements(&refs);
        let total: usize = statements.iter().map(|(_, r)| r.len()).sum();
        assert_eq!(total, rows.len());
        for (table, chunk) in &statements {
            assert!(!chunk.is_empty() && chunk.len() <= MAX_ROWS_PER_STATEMENT);
            assert!(chunk.iter().all(|r| r.table == *table));
            let bytes: usize = chunk.iter().map(|r| r.weight()).sum();
            assert!(chunk.len() == 1 || bytes <= MAX_BYTES_PER_STATEMENT);
        }
    }

    #[test]
    fn bad_urls_are_refused_without_their_password() {
        let e = Database::open("oracle://u:secret@h/db", 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("oracle://u:***@h/db") && !e.contains("secret"),
            "{e}"
        );
    }
}
