//! The room-archive database: the tables `TC_ROOMS`, `TC_USERS` and `TC_MSGARCHIVE` on
//! PostgreSQL, MySQL/MariaDB or SQLite, written idempotently in one transaction per
//! [`Batch`] and searched the way a XEP-0313 query to a room asks (filters, full-text,
//! XEP-0059 paging), entirely in SQL.
//!
//! The pools are the compliance sink's ([`Database::open_for`]: MySQL strict mode,
//! `utf8mb4` and UTC sessions; SQLite WAL with full fsync), and so is the sorting of
//! failures into transient ([`DbError::Unavailable`]: retry later) and refused
//! ([`DbError::Rejected`]: the same data always fails). Every operation is bounded by a
//! timeout, so a database that stops answering counts as unavailable.
//!
//! The schema is created and upgraded by the migrations embedded from
//! `migrations/<backend>`; their comments describe every column. The room archive needs a
//! database of its own (on PostgreSQL, a schema of its own is enough): the compliance
//! archive has a `TC_MSGARCHIVE` table of another shape, and both keep their migration
//! history in `_sqlx_migrations`. [`ArchiveDb::migrate`] says so when pointed at another
//! component's database.
//!
//! # Full-text search
//!
//! A search's text is split into words (runs of letters and digits; everything else
//! separates words), and a message matches when its body contains every word as a whole
//! word, ignoring case. Only the first [`MAX_SEARCH_WORDS`] distinct words count; text
//! without any word does not filter. The words are passed to the database as data, never
//! as query syntax, so no user text can change what is searched:
//!
//! * PostgreSQL: a generated `tsvector` column (GIN index) of the words of the first
//!   100,000 characters of the body (punctuation replaced by spaces, `simple`
//!   configuration), matched by `plainto_tsquery('simple', words)`.
//! * SQLite: an FTS5 table over the body (unicode61 tokenizer, also folding diacritics),
//!   matched by the words each in double quotes.
//! * MySQL/MariaDB: a `FULLTEXT` index without stop words, matched in boolean mode with
//!   every word required (`+word`). Words InnoDB does not index (shorter than
//!   `innodb_ft_min_token_size`, 3 by default, or longer than `innodb_ft_max_token_size`)
//!   are checked with a whole-word `REGEXP` instead. The body's collation
//!   (`utf8mb4_unicode_ci`) also ignores accents.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use imbus_connector_compliance::db::classify;
use imbus_connector_compliance::settings::Backend;
use imbus_connector_compliance::{Database, DbError, redact_url};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::mysql::{MySql, MySqlArguments, MySqlRow};
use sqlx::postgres::{PgArguments, PgRow, Postgres};
use sqlx::query::Query;
use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteRow};
use sqlx::{Row as _, Transaction};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};
use uuid::Uuid;

use crate::model::{Batch, Found, MessageRow, PageRequest, RoomChange, RoomRow, Search};

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");
static MYSQL_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/mysql");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How the room archive's connections name themselves (PostgreSQL `application_name`).
pub const APPLICATION_NAME: &str = "imbus-room-archive";
/// Longest a database operation (a migration, a batch, a search) may take before it
/// counts as failed: a database that stopped answering without closing the connection.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Most distinct words of a full-text search that are looked for; later ones are
/// ignored (a bound on the cost of one query).
pub const MAX_SEARCH_WORDS: usize = 32;
/// Most archive ids a search may name (`ids`); more is refused.
pub const MAX_SEARCH_IDS: usize = 1000;
/// Most messages in one INSERT statement (11 parameters each, well under every
/// backend's parameter limit).
const MAX_MESSAGES_PER_STATEMENT: usize = 50;
/// Most affiliations in one INSERT statement (3 parameters each).
const MAX_AFFILIATIONS_PER_STATEMENT: usize = 500;
/// Most bytes of text in one INSERT statement (well under MariaDB's default
/// `max_allowed_packet` of 16 MiB); a larger message goes alone.
const MAX_BYTES_PER_STATEMENT: usize = 4 << 20;
/// InnoDB's defaults for the shortest and longest word a `FULLTEXT` index holds, used
/// when the server does not say.
const INNODB_FT_TOKEN_SIZES: (usize, usize) = (3, 84);

/// Why a search has no answer.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// `after-id`, `before-id` or the page's `<after/>`/`<before/>` names a message that
    /// is not in this room's archive (XEP-0313 `item-not-found`).
    #[error("no message with id {0} in this room's archive")]
    UnknownId(Uuid),
    /// The database failed or refused the search.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The room-archive database: a PostgreSQL, MySQL/MariaDB or SQLite pool.
///
/// Cloning is cheap and shares the pool.
#[derive(Debug, Clone)]
pub struct ArchiveDb {
    db: Database,
    /// The URL without its password, for error messages.
    url: String,
    /// MySQL: the shortest and longest word the server's `FULLTEXT` indexes hold, asked
    /// once.
    ft_token_sizes: Arc<OnceLock<(usize, usize)>>,
}

impl ArchiveDb {
    /// Prepares a pool of at most `pool_size` connections to `url` (`postgres://`,
    /// `mysql://`, `mariadb://` or `sqlite:`) without connecting: connections are opened
    /// when first needed, so a database that is down at start only delays archiving.
    /// On SQLite the pool holds one connection (see [`Database::open_for`]); the connector
    /// writes and searches one after the other.
    pub fn open(url: &str, pool_size: u32) -> Result<ArchiveDb, DbError> {
        Ok(ArchiveDb {
            db: Database::open_for(url, pool_size, APPLICATION_NAME)?,
            url: redact_url(url),
            ft_token_sizes: Arc::new(OnceLock::new()),
        })
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// Creates the tables, or upgrades them to this version's schema. Running it again
    /// changes nothing.
    pub async fn migrate(&self) -> Result<(), DbError> {
        let backend = self.backend();
        let run = async {
            match &self.db {
                Database::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await,
                Database::MySql(p) => MYSQL_MIGRATIONS.run(p).await,
                Database::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await,
            }
        };
        match tokio::time::timeout(OPERATION_TIMEOUT, run).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _))) => Err(
                DbError::Unavailable(format!("schema migration failed: {}", classify(backend, e))),
            ),
            Ok(Err(
                MigrateError::VersionMismatch(v)
                | MigrateError::VersionMissing(v)
                | MigrateError::VersionTooOld(v, _)
                | MigrateError::VersionNotPresent(v),
            )) => Err(DbError::Config {
                url: self.url.clone(),
                detail: format!(
                    "the database's migration history (_sqlx_migrations, migration {v}) is not \
                     the room archive's: the room archive needs a database of its own (on \
                     PostgreSQL, a schema of its own), not the compliance archive's"
                ),
            }),
            Ok(Err(e)) => Err(DbError::Unavailable(format!(
                "schema migration failed: {e}"
            ))),
            Err(_) => Err(DbError::Unavailable(format!(
                "schema migration did not finish within {} s",
                OPERATION_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), DbError> {
        self.db.ping().await
    }

    /// Writes a batch in one transaction: the room changes in order, then the messages.
    /// Either all of it is stored when this returns `Ok`, or nothing.
    ///
    /// Writing the same batch again changes nothing: a message already stored (same
    /// archive id) is left as it is, a room's row and affiliations are set to the same
    /// state again.
    pub async fn write(&self, batch: &Batch) -> Result<(), DbError> {
        if batch.is_empty() {
            return Ok(());
        }
        let backend = self.backend();
        let run = async {
            let mut tx = Tx::begin(&self.db).await?;
            write_batch(&mut tx, backend, batch).await?;
            tx.commit().await
        };
        match tokio::time::timeout(OPERATION_TIMEOUT, run).await {
            Ok(result) => result.map_err(|e| classify(backend, e)),
            Err(_) => Err(timed_out("writing a batch")),
        }
    }

    /// Answers a search: one page of the room's matching messages in transcript order,
    /// with its position among all matches and their count (see [`Search`] and
    /// [`PageRequest`]). `max = 0` asks for the count only.
    ///
    /// The page and the counts come from one consistent read of the database.
    pub async fn search(&self, search: &Search) -> Result<Found, SearchError> {
        if search
            .ids
            .as_ref()
            .is_some_and(|ids| ids.len() > MAX_SEARCH_IDS)
        {
            return Err(DbError::Rejected(format!(
                "a search may name at most {MAX_SEARCH_IDS} archive ids"
            ))
            .into());
        }
        let backend = self.backend();
        let run = async {
            let mut tx = Tx::begin_read(&self.db).await?;
            let fulltext = self.fulltext(&mut tx, search.fulltext.as_deref()).await?;
            let found = search_in(&mut tx, backend, search, &fulltext).await?;
            tx.commit().await?;
            Ok(found)
        };
        match tokio::time::timeout(OPERATION_TIMEOUT, run).await {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(Failed::UnknownId(id))) => Err(SearchError::UnknownId(id)),
            Ok(Err(Failed::Sql(e))) => Err(classify(backend, e).into()),
            Err(_) => Err(timed_out("a search").into()),
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.db.close().await;
    }

    /// How this backend looks for the words of `text`.
    async fn fulltext(&self, tx: &mut Tx, text: Option<&str>) -> Result<Fulltext, Failed> {
        let words = search_words(text.unwrap_or_default());
        if words.is_empty() {
            return Ok(Fulltext::None);
        }
        Ok(match self.backend() {
            Backend::Postgres => Fulltext::Postgres(words.join(" ")),
            Backend::Sqlite => Fulltext::Sqlite(fts5_query(&words)),
            Backend::MySql => {
                let sizes = match self.ft_token_sizes.get() {
                    Some(sizes) => *sizes,
                    None => {
                        let sizes = tx.innodb_ft_token_sizes().await?;
                        *self.ft_token_sizes.get_or_init(|| sizes)
                    }
                };
                mysql_fulltext(&words, sizes)
            }
        })
    }
}

fn timed_out(what: &str) -> DbError {
    DbError::Unavailable(format!(
        "{what} did not finish within {} s",
        OPERATION_TIMEOUT.as_secs()
    ))
}

/// A search's failure before it is sorted into a [`SearchError`].
enum Failed {
    UnknownId(Uuid),
    Sql(sqlx::Error),
}

impl From<sqlx::Error> for Failed {
    fn from(e: sqlx::Error) -> Self {
        Failed::Sql(e)
    }
}

// ---------------------------------------------------------------------------------------
// Statements: SQL text with its parameters, for any backend.

/// A parameter of a statement.
#[derive(Debug, Clone, Copy)]
enum Param<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Bool(bool),
    Time(Option<OffsetDateTime>),
}

/// A statement for one backend: its text, with placeholders in the backend's syntax
/// (`$1` or `?`), and its parameters.
#[derive(Debug)]
struct Sql<'a> {
    backend: Backend,
    text: String,
    params: Vec<Param<'a>>,
}

impl<'a> Sql<'a> {
    fn new(backend: Backend, text: &str) -> Sql<'a> {
        Sql {
            backend,
            text: text.to_owned(),
            params: Vec::new(),
        }
    }

    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    fn bind(&mut self, param: Param<'a>) -> &mut Self {
        self.params.push(param);
        match self.backend {
            Backend::Postgres => {
                let _ = write!(self.text, "${}", self.params.len());
            }
            Backend::MySql | Backend::Sqlite => self.text.push('?'),
        }
        self
    }

    /// `(p1, p2, …)`.
    fn bind_tuple(&mut self, params: impl IntoIterator<Item = Param<'a>>) -> &mut Self {
        self.text.push('(');
        for (i, p) in params.into_iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.bind(p);
        }
        self.text.push(')');
        self
    }
}

fn utc(t: OffsetDateTime) -> OffsetDateTime {
    t.to_offset(UtcOffset::UTC)
}

/// A time as SQLite stores it: RFC 3339 in UTC with six fractional digits, so that
/// times compare as text.
fn sqlite_time(t: OffsetDateTime) -> String {
    let t = utc(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// A time as MySQL stores it (`DATETIME(6)`, UTC).
fn mysql_time(t: OffsetDateTime) -> PrimitiveDateTime {
    let t = utc(t);
    PrimitiveDateTime::new(t.date(), t.time())
}

fn pg_query<'q, 'a: 'q>(sql: &'q Sql<'a>) -> Query<'q, Postgres, PgArguments> {
    let mut q = sqlx::query(&sql.text);
    for p in &sql.params {
        q = match *p {
            Param::Text(v) => q.bind(v),
            Param::Int(v) => q.bind(v),
            Param::Bool(v) => q.bind(v),
            Param::Time(v) => q.bind(v.map(utc)),
        };
    }
    q
}

fn mysql_query<'q, 'a: 'q>(sql: &'q Sql<'a>) -> Query<'q, MySql, MySqlArguments> {
    let mut q = sqlx::query(&sql.text);
    for p in &sql.params {
        q = match *p {
            Param::Text(v) => q.bind(v),
            Param::Int(v) => q.bind(v),
            Param::Bool(v) => q.bind(v),
            Param::Time(v) => q.bind(v.map(mysql_time)),
        };
    }
    q
}

fn sqlite_query<'q, 'a: 'q>(sql: &'q Sql<'a>) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    let mut q = sqlx::query(&sql.text);
    for p in &sql.params {
        q = match *p {
            Param::Text(v) => q.bind(v),
            Param::Int(v) => q.bind(v),
            Param::Bool(v) => q.bind(v),
            Param::Time(v) => q.bind(v.map(sqlite_time)),
        };
    }
    q
}

/// An open transaction on one backend.
enum Tx {
    Postgres(Transaction<'static, Postgres>),
    MySql(Transaction<'static, MySql>),
    Sqlite(Transaction<'static, Sqlite>),
}

impl Tx {
    async fn begin(db: &Database) -> Result<Tx, sqlx::Error> {
        Ok(match db {
            Database::Postgres(p) => Tx::Postgres(p.begin().await?),
            Database::MySql(p) => Tx::MySql(p.begin().await?),
            Database::Sqlite(p) => Tx::Sqlite(p.begin().await?),
        })
    }

    /// A transaction whose reads all see one snapshot of the database (MySQL's default
    /// REPEATABLE READ and SQLite's read transactions already do).
    async fn begin_read(db: &Database) -> Result<Tx, sqlx::Error> {
        let mut tx = Tx::begin(db).await?;
        if let Tx::Postgres(t) = &mut tx {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut **t)
                .await?;
        }
        Ok(tx)
    }

    async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Postgres(t) => t.commit().await,
            Tx::MySql(t) => t.commit().await,
            Tx::Sqlite(t) => t.commit().await,
        }
    }

    async fn execute(&mut self, sql: &Sql<'_>) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Tx::Postgres(t) => pg_query(sql).execute(&mut **t).await?.rows_affected(),
            Tx::MySql(t) => mysql_query(sql).execute(&mut **t).await?.rows_affected(),
            Tx::Sqlite(t) => sqlite_query(sql).execute(&mut **t).await?.rows_affected(),
        })
    }

    /// The first column of the first row, if there is a row.
    async fn fetch_i64(&mut self, sql: &Sql<'_>) -> Result<Option<i64>, sqlx::Error> {
        match self {
            Tx::Postgres(t) => pg_query(sql)
                .fetch_optional(&mut **t)
                .await?
                .map(|r| r.try_get::<i64, _>(0))
                .transpose(),
            Tx::MySql(t) => mysql_query(sql)
                .fetch_optional(&mut **t)
                .await?
                .map(|r| r.try_get::<i64, _>(0))
                .transpose(),
            Tx::Sqlite(t) => sqlite_query(sql)
                .fetch_optional(&mut **t)
                .await?
                .map(|r| r.try_get::<i64, _>(0))
                .transpose(),
        }
    }

    /// A count (`SELECT COUNT(*) …`).
    async fn count(&mut self, sql: &Sql<'_>) -> Result<usize, sqlx::Error> {
        let n = self.fetch_i64(sql).await?.unwrap_or(0);
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Messages selected with [`MESSAGE_COLUMNS`].
    async fn messages(&mut self, sql: &Sql<'_>) -> Result<Vec<MessageRow>, sqlx::Error> {
        match self {
            Tx::Postgres(t) => pg_query(sql)
                .fetch_all(&mut **t)
                .await?
                .iter()
                .map(pg_message)
                .collect(),
            Tx::MySql(t) => mysql_query(sql)
                .fetch_all(&mut **t)
                .await?
                .iter()
                .map(mysql_message)
                .collect(),
            Tx::Sqlite(t) => sqlite_query(sql)
                .fetch_all(&mut **t)
                .await?
                .iter()
                .map(sqlite_message)
                .collect(),
        }
    }

    /// MySQL: the shortest and longest words its `FULLTEXT` indexes hold.
    async fn innodb_ft_token_sizes(&mut self) -> Result<(usize, usize), sqlx::Error> {
        let Tx::MySql(t) = self else {
            return Ok(INNODB_FT_TOKEN_SIZES);
        };
        let row = sqlx::query("SELECT @@innodb_ft_min_token_size, @@innodb_ft_max_token_size")
            .fetch_one(&mut **t)
            .await?;
        let size = |i: usize, default: usize| {
            // The variables are unsigned on MariaDB and signed on some MySQL versions.
            row.try_get::<u64, _>(i)
                .ok()
                .or_else(|| {
                    row.try_get::<i64, _>(i)
                        .ok()
                        .and_then(|v| u64::try_from(v).ok())
                })
                .and_then(|v| usize::try_from(v).ok())
                .unwrap_or(default)
        };
        Ok((
            size(0, INNODB_FT_TOKEN_SIZES.0),
            size(1, INNODB_FT_TOKEN_SIZES.1),
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Writing.

/// The room changes that matter: a `Stored` followed (later in the batch) by another
/// `Stored` of the same room is overwritten by it, and a `Gone` right after a `Gone` of
/// the same room finds nothing left to do. Skipping those changes nothing in the tables.
fn effective_room_changes(changes: &[RoomChange]) -> Vec<&RoomChange> {
    fn room(c: &RoomChange) -> &str {
        match c {
            RoomChange::Stored(r) => &r.room_jid,
            RoomChange::Gone { room_jid, .. } => room_jid,
        }
    }
    // Whether the next change of the same room (if any) is a `Stored`.
    let mut next_is_stored = vec![false; changes.len()];
    let mut later: HashMap<&str, bool> = HashMap::new();
    for (i, c) in changes.iter().enumerate().rev() {
        next_is_stored[i] = later.get(room(c)) == Some(&true);
        later.insert(room(c), matches!(c, RoomChange::Stored(_)));
    }
    let mut previous_gone: HashMap<&str, bool> = HashMap::new();
    let mut out = Vec::with_capacity(changes.len());
    for (i, c) in changes.iter().enumerate() {
        let gone = matches!(c, RoomChange::Gone { .. });
        let skip = if gone {
            previous_gone.get(room(c)) == Some(&true)
        } else {
            next_is_stored[i]
        };
        previous_gone.insert(room(c), gone);
        if !skip {
            out.push(c);
        }
    }
    out
}

const ROOM_COLUMNS: &str = "room_jid, name, description, subject, is_public, members_only, moderated, password_protected, max_users, history_length, created_at, updated_at, destroyed_at";
/// The columns an upsert of a room sets again.
const ROOM_UPDATED: [&str; 11] = [
    "name",
    "description",
    "subject",
    "is_public",
    "members_only",
    "moderated",
    "password_protected",
    "max_users",
    "history_length",
    "created_at",
    "updated_at",
];

fn upsert_room(backend: Backend, room: &RoomRow) -> Sql<'_> {
    let mut sql = Sql::new(
        backend,
        &format!("INSERT INTO TC_ROOMS ({ROOM_COLUMNS}) VALUES "),
    );
    sql.bind_tuple([
        Param::Text(Some(&room.room_jid)),
        Param::Text(room.name.as_deref()),
        Param::Text(room.description.as_deref()),
        Param::Text(room.subject.as_deref()),
        Param::Bool(room.public),
        Param::Bool(room.members_only),
        Param::Bool(room.moderated),
        Param::Bool(room.password_protected),
        Param::Int(room.max_users),
        Param::Int(room.history_length),
        Param::Time(Some(room.created_at)),
        Param::Time(Some(room.updated_at)),
        Param::Time(None),
    ]);
    let set: Vec<String> = match backend {
        Backend::MySql => ROOM_UPDATED
            .iter()
            .map(|c| format!("{c} = VALUES({c})"))
            .collect(),
        Backend::Postgres | Backend::Sqlite => ROOM_UPDATED
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect(),
    };
    sql.push(match backend {
        Backend::MySql => " ON DUPLICATE KEY UPDATE ",
        Backend::Postgres | Backend::Sqlite => " ON CONFLICT (room_jid) DO UPDATE SET ",
    });
    sql.push(&set.join(", ")).push(", destroyed_at = NULL");
    sql
}

fn delete_users(backend: Backend, room_jid: &str) -> Sql<'_> {
    let mut sql = Sql::new(backend, "DELETE FROM TC_USERS WHERE room_jid = ");
    sql.bind(Param::Text(Some(room_jid)));
    sql
}

/// Inserts of a room's affiliations (one per real JID, the last one given wins), in
/// statements of bounded size.
fn insert_users(backend: Backend, room: &RoomRow) -> Vec<Sql<'_>> {
    let mut unique: Vec<(&str, &str)> = Vec::with_capacity(room.affiliations.len());
    let mut at: HashMap<&str, usize> = HashMap::new();
    for (jid, affiliation) in &room.affiliations {
        match at.get(jid.as_str()) {
            Some(&i) => unique[i].1 = affiliation,
            None => {
                at.insert(jid, unique.len());
                unique.push((jid, affiliation));
            }
        }
    }
    unique
        .chunks(MAX_AFFILIATIONS_PER_STATEMENT)
        .map(|chunk| {
            let mut sql = Sql::new(
                backend,
                "INSERT INTO TC_USERS (room_jid, real_jid, affiliation) VALUES ",
            );
            for (i, (jid, affiliation)) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind_tuple([
                    Param::Text(Some(&room.room_jid)),
                    Param::Text(Some(jid)),
                    Param::Text(Some(affiliation)),
                ]);
            }
            sql
        })
        .collect()
}

fn room_gone<'a>(backend: Backend, room_jid: &'a str, at: OffsetDateTime) -> Sql<'a> {
    let mut sql = Sql::new(backend, "UPDATE TC_ROOMS SET destroyed_at = ");
    sql.bind(Param::Time(Some(at)))
        .push(", updated_at = ")
        .bind(Param::Time(Some(at)))
        .push(" WHERE room_jid = ")
        .bind(Param::Text(Some(room_jid)))
        .push(" AND destroyed_at IS NULL");
    sql
}

const MESSAGE_INSERT_COLUMNS: &str = "msg_id, room_jid, seq, from_jid, nickname, sent_date, subject, body_len, message_len, body_text, message_text";

/// Bytes of text a message adds to an INSERT statement.
fn weight(m: &MessageRow) -> usize {
    m.xml.len()
        + m.body.as_ref().map_or(0, String::len)
        + m.subject.as_ref().map_or(0, String::len)
        + m.from_jid.len()
        + m.nickname.len()
        + m.room_jid.len()
        + 64
}

/// Messages in INSERT statements of bounded size (rows and bytes); `ids` are their
/// archive ids as text.
fn insert_messages<'a>(
    backend: Backend,
    messages: &'a [MessageRow],
    ids: &'a [String],
) -> Vec<Sql<'a>> {
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut bytes = 0;
    for (i, m) in messages.iter().enumerate() {
        if !current.is_empty()
            && (current.len() >= MAX_MESSAGES_PER_STATEMENT
                || bytes + weight(m) > MAX_BYTES_PER_STATEMENT)
        {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += weight(m);
        current.push(i);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
        .into_iter()
        .map(|chunk| {
            let mut sql = Sql::new(
                backend,
                &format!("INSERT INTO TC_MSGARCHIVE ({MESSAGE_INSERT_COLUMNS}) VALUES "),
            );
            for (n, &i) in chunk.iter().enumerate() {
                let m = &messages[i];
                if n > 0 {
                    sql.push(", ");
                }
                sql.bind_tuple([
                    Param::Text(Some(&ids[i])),
                    Param::Text(Some(&m.room_jid)),
                    Param::Int(Some(m.seq)),
                    Param::Text(Some(&m.from_jid)),
                    Param::Text(Some(&m.nickname)),
                    Param::Time(Some(m.sent_date)),
                    Param::Text(m.subject.as_deref()),
                    Param::Int(Some(len_i64(m.body.as_ref().map_or(0, String::len)))),
                    Param::Int(Some(len_i64(m.xml.len()))),
                    Param::Text(m.body.as_deref()),
                    Param::Text(Some(&m.xml)),
                ]);
            }
            // Not INSERT IGNORE on MySQL: that would turn a value too long into a warning
            // and cut it.
            sql.push(match backend {
                Backend::MySql => " ON DUPLICATE KEY UPDATE msg_id = msg_id",
                Backend::Postgres | Backend::Sqlite => " ON CONFLICT (msg_id) DO NOTHING",
            });
            sql
        })
        .collect()
}

fn len_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn write_batch(tx: &mut Tx, backend: Backend, batch: &Batch) -> Result<(), sqlx::Error> {
    for change in effective_room_changes(&batch.rooms) {
        match change {
            RoomChange::Stored(room) => {
                tx.execute(&upsert_room(backend, room)).await?;
                tx.execute(&delete_users(backend, &room.room_jid)).await?;
                for sql in insert_users(backend, room) {
                    tx.execute(&sql).await?;
                }
            }
            RoomChange::Gone { room_jid, at } => {
                tx.execute(&room_gone(backend, room_jid, *at)).await?;
                tx.execute(&delete_users(backend, room_jid)).await?;
            }
        }
    }
    let ids: Vec<String> = batch
        .messages
        .iter()
        .map(|m| m.archive_id.hyphenated().to_string())
        .collect();
    for sql in insert_messages(backend, &batch.messages, &ids) {
        tx.execute(&sql).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Searching.

/// The words of a full-text search: runs of letters and digits, each distinct word
/// (ignoring case) once, at most [`MAX_SEARCH_WORDS`].
fn search_words(text: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .filter(|w| seen.insert(w.to_lowercase()))
        .take(MAX_SEARCH_WORDS)
        .map(str::to_owned)
        .collect()
}

/// An FTS5 query requiring every word, each a quoted string (quotes doubled), so no
/// word is ever read as FTS5 syntax.
fn fts5_query(words: &[String]) -> String {
    words
        .iter()
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// MySQL: the words the `FULLTEXT` index holds go to `MATCH … AGAINST` as required
/// terms, the others to whole-word regular expressions.
fn mysql_fulltext(words: &[String], (min, max): (usize, usize)) -> Fulltext {
    let (indexed, other): (Vec<&String>, Vec<&String>) = words.iter().partition(|w| {
        let n = w.chars().count();
        n >= min.max(1) && n <= max
    });
    let against = (!indexed.is_empty()).then(|| {
        indexed
            .iter()
            .map(|w| format!("+{}", strip_boolean_operators(w)))
            .collect::<Vec<_>>()
            .join(" ")
    });
    let patterns = other.iter().map(|w| whole_word_pattern(w)).collect();
    Fulltext::MySql { against, patterns }
}

/// A word without the characters boolean-mode full-text search reads as operators
/// (words are letters and digits already; this keeps it so).
fn strip_boolean_operators(word: &str) -> String {
    word.chars()
        .filter(|c| !matches!(c, '+' | '-' | '<' | '>' | '(' | ')' | '~' | '*' | '"' | '@'))
        .collect()
}

/// A regular expression (PCRE on MariaDB, ICU on MySQL) matching `word` as a whole
/// word; ASCII punctuation is escaped, so the word is always literal text.
fn whole_word_pattern(word: &str) -> String {
    let mut escaped = String::with_capacity(word.len() + 8);
    for c in word.chars() {
        if c.is_ascii_punctuation() {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    format!(r"(?<![\p{{L}}\p{{N}}]){escaped}(?![\p{{L}}\p{{N}}])")
}

/// How a search filters on the body's words.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fulltext {
    /// No words: no filter.
    None,
    /// The words, for `plainto_tsquery('simple', …)`.
    Postgres(String),
    /// An FTS5 query.
    Sqlite(String),
    /// A boolean-mode `AGAINST` text, and whole-word patterns for `REGEXP`.
    MySql {
        against: Option<String>,
        patterns: Vec<String>,
    },
}

/// Bounds on `seq` beyond the search's own filters (a page's cursor).
#[derive(Debug, Clone, Copy)]
enum Bound {
    None,
    Above(i64),
    AtMost(i64),
    Below(i64),
}

/// Every filter resolved: the search, the full-text condition, the sequence numbers of
/// `after_id` and `before_id`, and the `ids` as text.
struct Filters<'s> {
    search: &'s Search,
    fulltext: &'s Fulltext,
    after_seq: Option<i64>,
    before_seq: Option<i64>,
    ids: Option<Vec<String>>,
}

impl Filters<'_> {
    /// Appends ` WHERE <filters> [AND <bound>]`.
    fn push_where<'f>(&'f self, sql: &mut Sql<'f>, bound: Bound) {
        let s = self.search;
        sql.push(" WHERE room_jid = ")
            .bind(Param::Text(Some(&s.room_jid)));
        if let Some(nick) = &s.nickname {
            sql.push(" AND nickname = ").bind(Param::Text(Some(nick)));
        }
        if let Some(start) = s.start {
            sql.push(" AND sent_date >= ")
                .bind(Param::Time(Some(start)));
        }
        if let Some(end) = s.end {
            sql.push(" AND sent_date <= ").bind(Param::Time(Some(end)));
        }
        match self.fulltext {
            Fulltext::None => {}
            Fulltext::Postgres(words) => {
                sql.push(" AND body_tsv @@ plainto_tsquery('simple', ")
                    .bind(Param::Text(Some(words)))
                    .push(")");
            }
            Fulltext::Sqlite(query) => {
                sql.push(
                    " AND id IN (SELECT rowid FROM TC_MSGARCHIVE_FTS WHERE TC_MSGARCHIVE_FTS MATCH ",
                )
                .bind(Param::Text(Some(query)))
                .push(")");
            }
            Fulltext::MySql { against, patterns } => {
                if let Some(against) = against {
                    sql.push(" AND MATCH (body_text) AGAINST (")
                        .bind(Param::Text(Some(against)))
                        .push(" IN BOOLEAN MODE)");
                }
                for p in patterns {
                    sql.push(" AND body_text REGEXP ")
                        .bind(Param::Text(Some(p)));
                }
            }
        }
        if let Some(after) = self.after_seq {
            sql.push(" AND seq > ").bind(Param::Int(Some(after)));
        }
        if let Some(before) = self.before_seq {
            sql.push(" AND seq < ").bind(Param::Int(Some(before)));
        }
        match &self.ids {
            None => {}
            Some(ids) if ids.is_empty() => {
                sql.push(" AND 1 = 0");
            }
            Some(ids) => {
                sql.push(" AND msg_id IN ");
                sql.bind_tuple(ids.iter().map(|id| Param::Text(Some(id))));
            }
        }
        match bound {
            Bound::None => {}
            Bound::Above(seq) => {
                sql.push(" AND seq > ").bind(Param::Int(Some(seq)));
            }
            Bound::AtMost(seq) => {
                sql.push(" AND seq <= ").bind(Param::Int(Some(seq)));
            }
            Bound::Below(seq) => {
                sql.push(" AND seq < ").bind(Param::Int(Some(seq)));
            }
        }
    }

    /// `SELECT COUNT(*)` of the matches within `bound`.
    fn count(&self, backend: Backend, bound: Bound) -> Sql<'_> {
        let mut sql = Sql::new(backend, "SELECT COUNT(*) FROM TC_MSGARCHIVE");
        self.push_where(&mut sql, bound);
        sql
    }

    /// The matches within `bound`: the first `limit` after skipping `offset`, in
    /// transcript order, or backwards from the end when `descending`.
    fn page(
        &self,
        backend: Backend,
        bound: Bound,
        descending: bool,
        limit: usize,
        offset: usize,
    ) -> Sql<'_> {
        let mut sql = Sql::new(
            backend,
            &format!("SELECT {MESSAGE_COLUMNS} FROM TC_MSGARCHIVE"),
        );
        self.push_where(&mut sql, bound);
        // Numbers go into the text: they are ours, and every backend takes them there.
        let _ = write!(
            sql.text,
            " ORDER BY seq {} LIMIT {} OFFSET {}",
            if descending { "DESC" } else { "ASC" },
            limit.min(i64::MAX as usize),
            offset.min(i64::MAX as usize),
        );
        sql
    }
}

const MESSAGE_COLUMNS: &str =
    "msg_id, room_jid, seq, from_jid, nickname, sent_date, subject, body_text, message_text";

/// The sequence number of the room's message `id`.
async fn seq_of(tx: &mut Tx, backend: Backend, room_jid: &str, id: Uuid) -> Result<i64, Failed> {
    let text = id.hyphenated().to_string();
    let mut sql = Sql::new(backend, "SELECT seq FROM TC_MSGARCHIVE WHERE room_jid = ");
    sql.bind(Param::Text(Some(room_jid)))
        .push(" AND msg_id = ")
        .bind(Param::Text(Some(&text)));
    tx.fetch_i64(&sql).await?.ok_or(Failed::UnknownId(id))
}

async fn search_in(
    tx: &mut Tx,
    backend: Backend,
    search: &Search,
    fulltext: &Fulltext,
) -> Result<Found, Failed> {
    let mut after_seq = None;
    if let Some(id) = search.after_id {
        after_seq = Some(seq_of(tx, backend, &search.room_jid, id).await?);
    }
    let mut before_seq = None;
    if let Some(id) = search.before_id {
        before_seq = Some(seq_of(tx, backend, &search.room_jid, id).await?);
    }
    let cursor = match search.page {
        PageRequest::After(id) | PageRequest::Before(id) => {
            Some(seq_of(tx, backend, &search.room_jid, id).await?)
        }
        PageRequest::Index(_) | PageRequest::Last => None,
    };
    let filters = Filters {
        search,
        fulltext,
        after_seq,
        before_seq,
        ids: search
            .ids
            .as_ref()
            .map(|ids| ids.iter().map(|id| id.hyphenated().to_string()).collect()),
    };
    let count = tx.count(&filters.count(backend, Bound::None)).await?;
    let max = search.max;
    let (messages, first_index, complete) = match (&search.page, cursor) {
        (PageRequest::Index(i), _) => {
            let messages = if max == 0 || *i >= count {
                Vec::new()
            } else {
                tx.messages(&filters.page(backend, Bound::None, false, max, *i))
                    .await?
            };
            let complete = i.saturating_add(messages.len()) >= count;
            (messages, *i, complete)
        }
        (PageRequest::After(_), Some(seq)) => {
            let before = tx
                .count(&filters.count(backend, Bound::AtMost(seq)))
                .await?;
            let messages = if max == 0 {
                Vec::new()
            } else {
                tx.messages(&filters.page(backend, Bound::Above(seq), false, max, 0))
                    .await?
            };
            let complete = before + messages.len() >= count;
            (messages, before, complete)
        }
        (PageRequest::Before(_), Some(seq)) => {
            let before = tx.count(&filters.count(backend, Bound::Below(seq))).await?;
            let mut messages = if max == 0 {
                Vec::new()
            } else {
                tx.messages(&filters.page(backend, Bound::Below(seq), true, max, 0))
                    .await?
            };
            messages.reverse();
            let first = before.saturating_sub(messages.len());
            (messages, first, first == 0)
        }
        (PageRequest::Last, _) => {
            let mut messages = if max == 0 {
                Vec::new()
            } else {
                tx.messages(&filters.page(backend, Bound::None, true, max, 0))
                    .await?
            };
            messages.reverse();
            let first = count.saturating_sub(messages.len());
            (messages, first, first == 0)
        }
        // A cursor was resolved for every After/Before page above.
        (PageRequest::After(id) | PageRequest::Before(id), None) => {
            return Err(Failed::UnknownId(*id));
        }
    };
    Ok(Found {
        messages,
        first_index,
        count,
        complete,
    })
}

// ---------------------------------------------------------------------------------------
// Reading rows back.

fn decode_error(what: &str, detail: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::Decode(format!("TC_MSGARCHIVE.{what}: {detail}").into())
}

fn archive_id(text: &str) -> Result<Uuid, sqlx::Error> {
    Uuid::parse_str(text).map_err(|e| decode_error("msg_id", e))
}

fn pg_message(row: &PgRow) -> Result<MessageRow, sqlx::Error> {
    Ok(MessageRow {
        archive_id: archive_id(row.try_get("msg_id")?)?,
        room_jid: row.try_get("room_jid")?,
        seq: row.try_get("seq")?,
        from_jid: row.try_get("from_jid")?,
        nickname: row.try_get("nickname")?,
        sent_date: row.try_get("sent_date")?,
        subject: row.try_get("subject")?,
        body: row.try_get("body_text")?,
        xml: row.try_get("message_text")?,
    })
}

/// MySQL text read as bytes: binary collations and `VARBINARY` columns do not decode as
/// text through the driver.
fn mysql_text(row: &MySqlRow, column: &str) -> Result<Option<String>, sqlx::Error> {
    row.try_get::<Option<Vec<u8>>, _>(column)?
        .map(|bytes| String::from_utf8(bytes).map_err(|e| decode_error(column, e)))
        .transpose()
}

fn mysql_required(row: &MySqlRow, column: &str) -> Result<String, sqlx::Error> {
    mysql_text(row, column)?.ok_or_else(|| decode_error(column, "unexpected NULL"))
}

fn mysql_message(row: &MySqlRow) -> Result<MessageRow, sqlx::Error> {
    Ok(MessageRow {
        archive_id: archive_id(&mysql_required(row, "msg_id")?)?,
        room_jid: mysql_required(row, "room_jid")?,
        seq: row.try_get("seq")?,
        from_jid: mysql_required(row, "from_jid")?,
        nickname: mysql_required(row, "nickname")?,
        sent_date: row
            .try_get::<PrimitiveDateTime, _>("sent_date")?
            .assume_utc(),
        subject: mysql_text(row, "subject")?,
        body: mysql_text(row, "body_text")?,
        xml: mysql_required(row, "message_text")?,
    })
}

fn sqlite_message(row: &SqliteRow) -> Result<MessageRow, sqlx::Error> {
    let sent: String = row.try_get("sent_date")?;
    Ok(MessageRow {
        archive_id: archive_id(row.try_get("msg_id")?)?,
        room_jid: row.try_get("room_jid")?,
        seq: row.try_get("seq")?,
        from_jid: row.try_get("from_jid")?,
        nickname: row.try_get("nickname")?,
        sent_date: OffsetDateTime::parse(&sent, &Rfc3339)
            .map_err(|e| decode_error("sent_date", e))?,
        subject: row.try_get("subject")?,
        body: row.try_get("body_text")?,
        xml: row.try_get("message_text")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: &str) -> OffsetDateTime {
        OffsetDateTime::parse(s, &Rfc3339).unwrap()
    }

    fn room(jid: &str, name: &str) -> RoomChange {
        RoomChange::Stored(RoomRow {
            room_jid: jid.into(),
            name: Some(name.into()),
            description: None,
            subject: None,
            public: true,
            members_only: false,
            moderated: false,
            password_protected: false,
            max_users: None,
            history_length: None,
            created_at: time("2025-01-01T00:00:00Z"),
            updated_at: time("2025-01-01T00:00:00Z"),
            affiliations: vec![],
        })
    }

    fn gone(jid: &str) -> RoomChange {
        RoomChange::Gone {
            room_jid: jid.into(),
            at: time("2025-01-02T00:00:00Z"),
        }
    }

    #[test]
    fn superseded_room_changes_are_skipped() {
        let changes = vec![
            room("a", "1"),
            room("b", "1"),
            room("a", "2"),
            gone("a"),
            gone("a"),
            room("a", "3"),
            gone("b"),
            gone("a"),
        ];
        let kept: Vec<&RoomChange> = effective_room_changes(&changes);
        assert_eq!(
            kept,
            vec![
                &changes[1],
                &changes[2],
                &changes[3],
                &changes[5],
                &changes[6],
                &changes[7]
            ]
        );
    }

    #[test]
    fn words_are_letters_and_digits() {
        assert_eq!(
            search_words(" Hello, \"world\" *x+ hello OR-near (a) 中文 😀 'q';"),
            vec!["Hello", "world", "x", "OR", "near", "a", "中文", "q"]
        );
        assert!(search_words("  \t\n").is_empty());
        assert!(search_words("\"*+-()';").is_empty());
        let many: String = (0..100).map(|i| format!("w{i} ")).collect();
        assert_eq!(search_words(&many).len(), MAX_SEARCH_WORDS);
    }

    #[test]
    fn fts5_words_are_quoted() {
        let words = vec!["a\"b".to_owned(), "c".to_owned()];
        assert_eq!(fts5_query(&words), r#""a""b" "c""#);
    }

    #[test]
    fn mysql_short_words_go_to_regexp() {
        let words = search_words("to deploy 中文 Server");
        assert_eq!(
            mysql_fulltext(&words, (3, 84)),
            Fulltext::MySql {
                against: Some("+deploy +Server".into()),
                patterns: vec![
                    r"(?<![\p{L}\p{N}])to(?![\p{L}\p{N}])".into(),
                    r"(?<![\p{L}\p{N}])中文(?![\p{L}\p{N}])".into(),
                ],
            }
        );
        assert_eq!(
            whole_word_pattern("a.b"),
            r"(?<![\p{L}\p{N}])a\.b(?![\p{L}\p{N}])"
        );
    }

    #[test]
    fn sqlite_times_sort_as_text() {
        let a = sqlite_time(time("2025-01-01T00:00:00Z"));
        let b = sqlite_time(time("2025-01-01T00:00:00.5Z"));
        let c = sqlite_time(time("2025-01-01T01:00:00.000001+01:00"));
        assert_eq!(a, "2025-01-01T00:00:00.000000Z");
        assert!(a < b && a < c && c < b, "{a} {b} {c}");
        assert_eq!(
            OffsetDateTime::parse(&b, &Rfc3339).unwrap(),
            time("2025-01-01T00:00:00.5Z")
        );
    }

    #[test]
    fn placeholders_follow_the_backend() {
        let mut pg = Sql::new(Backend::Postgres, "SELECT ");
        pg.bind_tuple([Param::Int(Some(1)), Param::Bool(true)]);
        assert_eq!(pg.text, "SELECT ($1, $2)");
        let mut my = Sql::new(Backend::MySql, "SELECT ");
        my.bind_tuple([Param::Int(Some(1)), Param::Bool(true)]);
        assert_eq!(my.text, "SELECT (?, ?)");
    }

    #[test]
    fn message_statements_are_bounded() {
        let message = |n: u128, body: usize| MessageRow {
            archive_id: Uuid::from_u128(n),
            room_jid: "r@c".into(),
            seq: n as i64,
            from_jid: "a@b/c".into(),
            nickname: "a".into(),
            sent_date: time("2025-01-01T00:00:00Z"),
            subject: None,
            body: Some("x".repeat(body)),
            xml: "<message/>".into(),
        };
        let messages: Vec<MessageRow> = (0..120)
            .map(|n| message(n, 10))
            .chain([message(500, 3 << 20), message(501, 3 << 20)])
            .collect();
        let ids: Vec<String> = messages.iter().map(|m| m.archive_id.to_string()).collect();
        let statements = insert_messages(Backend::Sqlite, &messages, &ids);
        let rows: usize = statements.iter().map(|s| s.params.len() / 11).sum();
        assert_eq!(rows, messages.len());
        assert!(
            statements
                .iter()
                .all(|s| s.params.len() / 11 <= MAX_MESSAGES_PER_STATEMENT)
        );
        for sql in &statements {
            let rows = sql.params.len() / 11;
            let bytes: usize = sql
                .params
                .iter()
                .map(|p| match p {
                    Param::Text(t) => t.map_or(0, str::len),
                    _ => 0,
                })
                .sum();
            assert!(
                rows == 1 || bytes <= MAX_BYTES_PER_STATEMENT,
                "{rows} rows, {bytes} bytes"
            );
        }
        // 50 + 50 + (20 and one large message) + the other large message.
        assert_eq!(statements.len(), 4);
    }
}
