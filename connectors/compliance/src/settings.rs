//! The sink's settings (pure): which records are archived, where, how often the database
//! is checked.

use std::path::Path;
use std::time::Duration;

use imbus_config::Config;
use imbus_core::MessageType;

/// A set of message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindSet(u8);

impl KindSet {
    /// Every message type.
    pub const ALL: KindSet = KindSet(0b1111);

    const fn bit(kind: MessageType) -> u8 {
        match kind {
            MessageType::Chat => 1,
            MessageType::Normal => 2,
            MessageType::Groupchat => 4,
            MessageType::Headline => 8,
        }
    }

    /// Whether `kind` is in the set.
    pub const fn contains(self, kind: MessageType) -> bool {
        self.0 & Self::bit(kind) != 0
    }

    /// Parses `chat,normal,…` (the form of `compliance.kinds`).
    pub fn parse(text: &str) -> Result<KindSet, String> {
        Self::from_names(text.split(','))
    }

    /// The set of the named types; an unknown name is an error naming it.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<KindSet, String> {
        let mut set = 0;
        for name in names {
            let kind = match name.trim() {
                "chat" => MessageType::Chat,
                "normal" => MessageType::Normal,
                "groupchat" => MessageType::Groupchat,
                "headline" => MessageType::Headline,
                other => {
                    return Err(format!(
                        "unknown message type {other:?} (expected chat, normal, groupchat or headline)"
                    ));
                }
            };
            set |= Self::bit(kind);
        }
        Ok(KindSet(set))
    }
}

/// What the sink archives; changes live through the `config` topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSettings {
    /// Archive messages received by local users.
    pub archive_inbound: bool,
    /// Archive messages sent by local users to other clusters or domains.
    pub archive_outbound: bool,
    /// Message types archived.
    pub kinds: KindSet,
    /// How often the database is checked while there is nothing to write.
    pub heartbeat_interval: Duration,
    /// How long a batch smaller than the sink's largest waits for more records before it
    /// is written (zero: written at once).
    pub batch_wait: Duration,
}

impl Default for SinkSettings {
    fn default() -> Self {
        Self {
            archive_inbound: true,
            archive_outbound: false,
            kinds: KindSet::ALL,
            heartbeat_interval: Duration::from_secs(30),
            batch_wait: Duration::from_millis(100),
        }
    }
}

impl SinkSettings {
    /// The sink settings of a (validated) configuration.
    pub fn from_config(config: &Config) -> SinkSettings {
        let c = &config.compliance;
        SinkSettings {
            archive_inbound: c.archive_inbound,
            archive_outbound: c.archive_outbound,
            // `compliance.kinds` was validated against the same names.
            kinds: KindSet::from_names(c.kinds.iter().map(String::as_str)).unwrap_or(KindSet::ALL),
            heartbeat_interval: c.heartbeat_interval,
            batch_wait: c.batch_wait,
        }
    }
}

/// The database the configuration names: `compliance.database_url`, or the SQLite file
/// `data_dir/compliance.sqlite` (created if missing) when that is empty.
pub fn database_url(config: &Config) -> String {
    if config.compliance.database_url.is_empty() {
        sqlite_url(&config.data_dir.join("compliance.sqlite"))
    } else {
        config.compliance.database_url.clone()
    }
}

/// The URL of a SQLite file, created if missing.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// The database backends the sink writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    MySql,
    Sqlite,
}

impl Backend {
    /// The backend a URL names, by its scheme.
    pub fn of_url(url: &str) -> Option<Backend> {
        let scheme = url.split_once(':')?.0.to_ascii_lowercase();
        match scheme.as_str() {
            "postgres" | "postgresql" => Some(Backend::Postgres),
            "mysql" | "mariadb" => Some(Backend::MySql),
            "sqlite" => Some(Backend::Sqlite),
            _ => None,
        }
    }
}

pub use imbus_config::redact_url;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_sets() {
        let s = KindSet::parse("chat, headline").unwrap();
        assert!(s.contains(MessageType::Chat) && s.contains(MessageType::Headline));
        assert!(!s.contains(MessageType::Normal) && !s.contains(MessageType::Groupchat));
        assert!(KindSet::parse("chat,sms").unwrap_err().contains("sms"));
    }

    #[test]
    fn settings_follow_the_configuration() {
        let config = Config::load(
            None,
            [
                ("IMBUS_COMPLIANCE_KINDS", "groupchat"),
                ("IMBUS_COMPLIANCE_ARCHIVE_OUTBOUND", "true"),
                ("IMBUS_DATA_DIR", "/var/lib/imbus"),
            ],
        )
        .unwrap();
        let s = SinkSettings::from_config(&config);
        assert!(s.archive_inbound && s.archive_outbound);
        assert_eq!(s.kinds, KindSet::parse("groupchat").unwrap());
        assert_eq!(
            database_url(&config),
            "sqlite:///var/lib/imbus/compliance.sqlite?mode=rwc"
        );
        let defaults = Config::load(None, Vec::<(String, String)>::new()).unwrap();
        assert_eq!(
            SinkSettings::from_config(&defaults),
            SinkSettings::default()
        );
    }

    #[test]
    fn backends_by_scheme() {
        assert_eq!(Backend::of_url("postgres://h/db"), Some(Backend::Postgres));
        assert_eq!(
            Backend::of_url("postgresql://h/db"),
            Some(Backend::Postgres)
        );
        assert_eq!(Backend::of_url("mysql://h/db"), Some(Backend::MySql));
        assert_eq!(Backend::of_url("mariadb://h/db"), Some(Backend::MySql));
        assert_eq!(Backend::of_url("sqlite:x.db"), Some(Backend::Sqlite));
        assert_eq!(Backend::of_url("oracle://h"), None);
    }

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            redact_url("postgres://archiver:s3cr:et@db.example.com:5432/im?sslmode=require"),
            "postgres://archiver:***@db.example.com:5432/im"
        );
        assert_eq!(
            redact_url("mysql://root@127.0.0.1:3306/test"),
            "mysql://root@127.0.0.1:3306/test"
        );
        assert_eq!(redact_url("mysql://u:p@w@h/db"), "mysql://u:***@h/db");
        assert_eq!(
            redact_url("sqlite:///var/lib/imbus/compliance.sqlite?mode=rwc"),
            "sqlite:///var/lib/imbus/compliance.sqlite"
        );
    }
}
