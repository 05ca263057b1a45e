//! imbus configuration.
//!
//! One TOML file (optional: `imbus serve` with no file runs a working single-node server
//! for domain `localhost`), every key overridable by an environment variable, everything
//! validated at start with an error that names the key, the bad value, where it came from
//! and what is allowed.
//!
//! Every setting is declared once, in [`SETTINGS`]: its dotted name (the TOML path), type,
//! default and help text. The environment variable of a setting is `IMBUS_` followed by
//! its name in upper case with dots replaced by underscores: `c2s_port` is
//! `IMBUS_C2S_PORT`, `bus.kafka.bootstrap` is `IMBUS_BUS_KAFKA_BOOTSTRAP`.
//!
//! Settings marked *live* can also be changed while the server runs: a change is an event
//! on the `config` topic (key = setting name), and every component folds that topic over
//! the values from file and environment ([`Config::with_override`]).

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod aliases;
mod spec;
pub mod topics;

pub use spec::{Kind, SETTINGS, SettingSpec};

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    /// Changed at run time through the `config` topic.
    Live,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("the default"),
            Source::File(p) => write!(f, "config file {}", p.display()),
            Source::Env(v) => write!(f, "environment variable {v}"),
            Source::Live => f.write_str("a live change on the config topic"),
        }
    }
}

/// A configuration problem, worded for the operator who has to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("unknown setting `{key}` in {origin}{hint}")]
    Unknown {
        key: String,
        origin: Source,
        hint: String,
    },
    #[error("invalid value for `{key}` (from {origin}): {value}; {expected}")]
    Invalid {
        key: String,
        origin: Source,
        value: String,
        expected: String,
    },
    #[error(
        "setting `{key}` cannot be changed while the server runs; edit the config file or {env} and restart"
    )]
    NotLive { key: String, env: String },
    #[error("{0}")]
    Conflict(String),
}

/// Which log backend carries the topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// In-process, durable on local disk: one `imbus serve` is the whole system.
    Embedded,
    /// Any Kafka-protocol cluster, through librdkafka.
    Kafka,
}

/// When the embedded log forces appended records to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Before every acknowledgement (group commit: one fsync acknowledges a whole batch).
    Always,
    /// At most this long after an append; acknowledged records may be lost on power loss.
    Interval(Duration),
    /// Leave it to the operating system.
    Never,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// What happens when a client binds a resource another session holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceConflict {
    /// The new session takes the resource; the older one ends with a `conflict` error.
    Replace,
    /// The new bind is refused.
    Refuse,
}

/// Settings of the router (all live).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterSettings {
    /// `imbus serve` runs a router (`router.embedded`).
    pub embedded: bool,
    /// Instant messaging between users (`im.enabled`).
    pub im_enabled: bool,
    /// Presence sharing (`presence.enabled`).
    pub presence_enabled: bool,
    /// Offline storage (`offline.enabled`).
    pub offline_enabled: bool,
    /// Offline messages per user (`offline.quota`).
    pub offline_quota: usize,
    /// Lock-on-reply idle timeout (`im.lock_idle_timeout`).
    pub lock_idle_timeout: Duration,
    /// Answer XEP-0092 version requests (`disco.expose_version`).
    pub expose_version: bool,
}

/// Settings of the compliance sink (`compliance.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComplianceConfig {
    /// Archive IMs into the compliance database (`compliance.enabled`).
    pub enabled: bool,
    /// `imbus serve` runs the sink (`compliance.embedded`).
    pub embedded: bool,
    /// The database URL; empty: SQLite file `data_dir/compliance.sqlite`.
    pub database_url: String,
    /// Archive messages received by local users (live).
    pub archive_inbound: bool,
    /// Archive messages sent by local users to other clusters or domains (live).
    pub archive_outbound: bool,
    /// Message types archived: some of `chat`, `normal`, `groupchat`, `headline` (live).
    pub kinds: Vec<String>,
    /// Database connections.
    pub pool_size: u32,
    /// Database check interval while idle (live).
    pub heartbeat_interval: Duration,
    /// How long a batch smaller than the largest waits for more records (live).
    pub batch_wait: Duration,
}

/// Settings of the message archive (XEP-0313).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MamSettings {
    /// Messages are archived and archive queries answered (`mam.enabled`).
    pub enabled: bool,
    /// `imbus serve` runs the archive processor (`mam.embedded`).
    pub embedded: bool,
    /// How long the archive topic keeps messages; `None` forever (`mam.retention`).
    pub retention: Option<Duration>,
}

/// Settings of the chat rooms (XEP-0045).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomsSettings {
    /// The chat service runs and the router forwards stanzas to it (`rooms.enabled`).
    pub enabled: bool,
    /// `imbus serve` runs the rooms processor (`rooms.embedded`).
    pub embedded: bool,
    /// Messages of history pushed to new participants (`rooms.history_for_new_joiners`,
    /// live).
    pub history_for_new_joiners: usize,
    /// The longest history a room keeps (`rooms.max_history_length`).
    pub max_history_length: usize,
    /// Owners may make rooms persistent (`rooms.persistent_chat`, live).
    pub persistent_chat: bool,
    /// Every group chat message of a persistent room is archived and searchable
    /// (`rooms.archive_all`, live).
    pub archive_all: bool,
    /// The room-archive connector (`rooms.archive.*`).
    pub archive: RoomArchiveSettings,
}

/// Settings of the room-archive connector (`rooms.archive.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomArchiveSettings {
    /// `imbus serve` runs the connector (`rooms.archive.embedded`).
    pub embedded: bool,
    /// The database URL; empty: SQLite file `data_dir/rooms.sqlite`.
    pub database_url: String,
    /// Database connections.
    pub pool_size: u32,
    /// Database check interval while idle (live).
    pub heartbeat_interval: Duration,
}

/// Settings of client-to-server XMPP sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct C2sConfig {
    /// PEM certificate chain and key of the listeners; `None`: self-signed in `data_dir/tls`.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    pub require_tls: bool,
    pub resource_conflict: ResourceConflict,
    pub max_stanza_bytes: usize,
    pub auth_timeout: Duration,
    /// WebSocket connections arrive through a TLS-terminating reverse proxy.
    pub websocket_tls_proxy: bool,
    /// In-Band Registration (XEP-0077) is offered (`c2s.registration`).
    pub registration: bool,
    /// Account creations tried per IP address and hour (`c2s.registration_per_hour`).
    pub registration_per_hour: u32,
    /// How long a broken Stream Management session may be resumed.
    pub sm_resume_timeout: Duration,
}

/// Settings of the log backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    pub backend: Backend,
    /// Partitions of new topics: `bus.partitions`, or when that is 0 (automatic) 1 on the
    /// embedded log and 8 on Kafka.
    pub partitions: i32,
    /// Whether `partitions` was chosen automatically; existing topics with another count
    /// are then used as they are.
    pub partitions_automatic: bool,
    pub fsync: Fsync,
    pub segment_bytes: u64,
    pub kafka_bootstrap: String,
    pub kafka_replication_factor: i32,
}

/// The validated configuration of one imbus node.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub domain: String,
    pub data_dir: PathBuf,
    pub node_id: u32,
    pub cluster_id: String,
    pub bind: IpAddr,
    pub c2s_port: u16,
    pub c2s_tls_port: u16,
    pub s2s_port: u16,
    pub http_bind: IpAddr,
    pub http_port: u16,
    pub log_level: String,
    pub log_format: LogFormat,
    /// PBKDF2 iterations of newly stored SCRAM credentials.
    pub scram_iterations: u32,
    pub c2s: C2sConfig,
    pub router: RouterSettings,
    pub compliance: ComplianceConfig,
    pub mam: MamSettings,
    pub rooms: RoomsSettings,
    /// The chat nodes and their aliases, cluster-wide (`rooms.aliases`, live; managed
    /// with `imbus alias`).
    pub chat_nodes: aliases::ChatNodes,
    pub bus: BusConfig,
    raw: BTreeMap<&'static str, (String, Source)>,
}

impl Config {
    /// Loads the configuration: defaults, then the file (if any), then `IMBUS_*`
    /// environment variables from `env`.
    pub fn load<I, K, V>(file: Option<&Path>, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut raw: BTreeMap<&'static str, (String, Source)> = SETTINGS
            .iter()
            .map(|s| (s.name, (s.default.to_owned(), Source::Default)))
            .collect();

        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let table: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::Syntax {
                        path: path.to_owned(),
                        message: e.to_string(),
                    })?;
            let mut flat = Vec::new();
            flatten("", &toml::Value::Table(table), &mut flat);
            for (key, value) in flat {
                let source = Source::File(path.to_owned());
                let Some(spec) = spec::find(&key) else {
                    return Err(ConfigError::Unknown {
                        hint: spec::suggestion(&key),
                        key,
                        origin: source,
                    });
                };
                let text = match value {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    other => {
                        return Err(ConfigError::Invalid {
                            key,
                            origin: source,
                            value: other.to_string(),
                            expected: spec.kind.expected(),
                        });
                    }
                };
                raw.insert(spec.name, (text, source));
            }
        }

        for (key, value) in env {
            let (key, value): (String, String) = (key.into(), value.into());
            let Some(rest) = key.strip_prefix("IMBUS_") else {
                continue;
            };
            // IMBUS_CONFIG names the file itself; it is not a setting.
            if rest == "CONFIG" {
                continue;
            }
            match SETTINGS.iter().find(|s| s.env_name() == key) {
                Some(spec) => {
                    raw.insert(spec.name, (value, Source::Env(key)));
                }
                None => {
                    return Err(ConfigError::Unknown {
                        hint: spec::suggestion(&rest.to_ascii_lowercase()),
                        origin: Source::Env(key.clone()),
                        key,
                    });
                }
            }
        }

        Config::from_raw(raw)
    }

    /// The configuration with one live setting changed (as folded from the `config`
    /// topic). `None` returns the setting to its file/environment/default value, which
    /// `base` supplies.
    pub fn with_override(
        &self,
        base: &Config,
        key: &str,
        value: Option<&str>,
    ) -> Result<Config, ConfigError> {
        let spec = spec::find(key).ok_or_else(|| ConfigError::Unknown {
            key: key.to_owned(),
            origin: Source::Live,
            hint: spec::suggestion(key),
        })?;
        if !spec.live {
            return Err(ConfigError::NotLive {
                key: key.to_owned(),
                env: spec.env_name(),
            });
        }
        let mut raw = self.raw.clone();
        let entry = match value {
            Some(v) => (v.to_owned(), Source::Live),
            None => base
                .raw
                .get(spec.name)
                .cloned()
                .unwrap_or_else(|| (spec.default.to_owned(), Source::Default)),
        };
        raw.insert(spec.name, entry);
        Config::from_raw(raw)
    }

    /// The effective value of every setting and where it came from, in name order.
    pub fn effective(&self) -> impl Iterator<Item = (&'static SettingSpec, &str, &Source)> {
        SETTINGS
            .iter()
            .filter_map(|spec| self.raw.get(spec.name).map(|(v, s)| (spec, v.as_str(), s)))
    }

    /// The effective value of one setting as text.
    pub fn value(&self, key: &str) -> Option<(&str, &Source)> {
        self.raw.get(key).map(|(v, s)| (v.as_str(), s))
    }

    fn from_raw(raw: BTreeMap<&'static str, (String, Source)>) -> Result<Config, ConfigError> {
        let get = |name: &'static str| -> Result<spec::Value, ConfigError> {
            let spec = spec::find(name).ok_or_else(|| {
                ConfigError::Conflict(format!("setting `{name}` is not declared"))
            })?;
            let (text, source) = raw
                .get(name)
                .cloned()
                .unwrap_or_else(|| (spec.default.to_owned(), Source::Default));
            spec.kind
                .parse(&text)
                .map_err(|expected| ConfigError::Invalid {
                    key: name.to_owned(),
                    origin: source,
                    value: format!("{text:?}"),
                    expected,
                })
        };

        let backend = match get("bus.backend")?.string().as_str() {
            "kafka" => Backend::Kafka,
            _ => Backend::Embedded,
        };
        let config = Config {
            domain: get("domain")?.string(),
            data_dir: PathBuf::from(get("data_dir")?.string()),
            node_id: get("node_id")?.int() as u32,
            cluster_id: get("cluster_id")?.string(),
            bind: get("bind")?.ip(),
            c2s_port: get("c2s_port")?.int() as u16,
            c2s_tls_port: get("c2s_tls_port")?.int() as u16,
            s2s_port: get("s2s_port")?.int() as u16,
            http_bind: get("http_bind")?.ip(),
            http_port: get("http_port")?.int() as u16,
            log_level: get("log_level")?.string(),
            log_format: match get("log_format")?.string().as_str() {
                "json" => LogFormat::Json,
                _ => LogFormat::Text,
            },
            scram_iterations: get("auth.scram_iterations")?.int() as u32,
            c2s: C2sConfig {
                tls_files: tls_files(
                    get("tls.cert_file")?.string(),
                    get("tls.key_file")?.string(),
                )?,
                require_tls: get("c2s.require_tls")?.int() != 0,
                resource_conflict: match get("c2s.resource_conflict")?.string().as_str() {
                    "refuse" => ResourceConflict::Refuse,
                    _ => ResourceConflict::Replace,
                },
                max_stanza_bytes: get("c2s.max_stanza_bytes")?.int() as usize,
                auth_timeout: get("c2s.auth_timeout")?.duration(),
                websocket_tls_proxy: get("c2s.websocket_tls_proxy")?.int() != 0,
                registration: get("c2s.registration")?.int() != 0,
                registration_per_hour: get("c2s.registration_per_hour")?.int() as u32,
                sm_resume_timeout: get("sm.resume_timeout")?.duration(),
            },
            router: RouterSettings {
                embedded: get("router.embedded")?.int() != 0,
                im_enabled: get("im.enabled")?.int() != 0,
                presence_enabled: get("presence.enabled")?.int() != 0,
                offline_enabled: get("offline.enabled")?.int() != 0,
                offline_quota: get("offline.quota")?.int() as usize,
                lock_idle_timeout: get("im.lock_idle_timeout")?.duration(),
                expose_version: get("disco.expose_version")?.int() != 0,
            },
            compliance: ComplianceConfig {
                enabled: get("compliance.enabled")?.int() != 0,
                embedded: get("compliance.embedded")?.int() != 0,
                database_url: get("compliance.database_url")?.string(),
                archive_inbound: get("compliance.archive_inbound")?.int() != 0,
                archive_outbound: get("compliance.archive_outbound")?.int() != 0,
                kinds: get("compliance.kinds")?
                    .string()
                    .split(',')
                    .map(str::to_owned)
                    .collect(),
                pool_size: get("compliance.pool_size")?.int() as u32,
                heartbeat_interval: get("compliance.heartbeat_interval")?.duration(),
                batch_wait: get("compliance.batch_wait")?.duration(),
            },
            mam: MamSettings {
                enabled: get("mam.enabled")?.int() != 0,
                embedded: get("mam.embedded")?.int() != 0,
                retention: Some(get("mam.retention")?.duration()).filter(|d| !d.is_zero()),
            },
            rooms: RoomsSettings {
                enabled: get("rooms.enabled")?.int() != 0,
                embedded: get("rooms.embedded")?.int() != 0,
                history_for_new_joiners: get("rooms.history_for_new_joiners")?.int() as usize,
                max_history_length: get("rooms.max_history_length")?.int() as usize,
                persistent_chat: get("rooms.persistent_chat")?.int() != 0,
                archive_all: get("rooms.archive_all")?.int() != 0,
                archive: RoomArchiveSettings {
                    embedded: get("rooms.archive.embedded")?.int() != 0,
                    database_url: get("rooms.archive.database_url")?.string(),
                    pool_size: get("rooms.archive.pool_size")?.int() as u32,
                    heartbeat_interval: get("rooms.archive.heartbeat_interval")?.duration(),
                },
            },
            bus: BusConfig {
                backend,
                partitions: match get("bus.partitions")?.int() as i32 {
                    0 if backend == Backend::Embedded => 1,
                    0 => 8,
                    n => n,
                },
                partitions_automatic: get("bus.partitions")?.int() == 0,
                fsync: get("bus.fsync")?.fsync(),
                segment_bytes: get("bus.segment_bytes")?.int() as u64,
                kafka_bootstrap: get("bus.kafka.bootstrap")?.string(),
                kafka_replication_factor: get("bus.kafka.replication_factor")?.int() as i32,
            },
            chat_nodes: aliases::ChatNodes::parse(&get("rooms.aliases")?.string())
                .map_err(|e| ConfigError::Conflict(format!("`rooms.aliases`: {e}")))?,
            raw,
        };
        config.check_ports()?;
        config.check_rooms()?;
        Ok(config)
    }

    /// Two listeners on the same address and port cannot both start: say so now rather
    /// than with an "address in use" later. Port 0 (any free port) never conflicts.
    fn check_ports(&self) -> Result<(), ConfigError> {
        let listeners = [
            ("c2s_port", self.bind, self.c2s_port),
            ("c2s_tls_port", self.bind, self.c2s_tls_port),
            ("s2s_port", self.bind, self.s2s_port),
            ("http_port", self.http_bind, self.http_port),
        ];
        for (i, (a_name, a_ip, a_port)) in listeners.iter().enumerate() {
            for (b_name, b_ip, b_port) in &listeners[i + 1..] {
                let overlap = a_ip == b_ip || a_ip.is_unspecified() || b_ip.is_unspecified();
                if *a_port != 0 && a_port == b_port && overlap {
                    return Err(ConfigError::Conflict(format!(
                        "`{a_name}` and `{b_name}` are both {a_port}; every listener needs its own port"
                    )));
                }
            }
        }
        Ok(())
    }

    /// New participants cannot be shown more history than a room keeps.
    fn check_rooms(&self) -> Result<(), ConfigError> {
        let rooms = &self.rooms;
        if rooms.history_for_new_joiners > rooms.max_history_length {
            return Err(ConfigError::Conflict(format!(
                "`rooms.history_for_new_joiners` is {} but `rooms.max_history_length` is {}; \
                 new participants cannot be shown more history than a room keeps: \
                 raise the maximum or lower the number shown",
                rooms.history_for_new_joiners, rooms.max_history_length
            )));
        }
        let url = &rooms.archive.database_url;
        if !url.is_empty() && *url == self.compliance.database_url {
            return Err(ConfigError::Conflict(format!(
                "`rooms.archive.database_url` and `compliance.database_url` are both {}; \
                 the persistent chat database and the compliance database each need their own \
                 database (both have a TC_MSGARCHIVE table)",
                redact_url(url)
            )));
        }
        Ok(())
    }

    /// The system-managed chat node alias of this node: `conference-<node>-<cluster>.<domain>`.
    pub fn system_chat_alias(&self) -> String {
        self.chat_site().system_alias(self.node_id)
    }

    /// What this node's configuration makes system chat node aliases of: its cluster id
    /// and domain.
    pub fn chat_site(&self) -> aliases::Site {
        aliases::Site::new(&self.cluster_id, &self.domain)
    }

    /// The domains of the chat service: every chat node alias of the cluster but one equal
    /// to the IM domain (after a domain change); before any chat node registered
    /// (`rooms.aliases` empty), this node's system alias.
    pub fn chat_domains(&self) -> Vec<String> {
        if self.chat_nodes.is_empty() {
            vec![self.system_chat_alias()]
        } else {
            self.chat_nodes
                .aliases()
                .map(|(name, _)| name.to_owned())
                .filter(|name| *name != self.domain)
                .collect()
        }
    }
}

/// A database URL fit for logs and metrics: the password, if any, replaced by `***`;
/// query parameters (which may hold one too) removed.
pub fn redact_url(url: &str) -> String {
    let url = url.split('?').next().unwrap_or_default();
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = match userinfo.split_once(':') {
                Some((user, _password)) => format!("{user}:***"),
                None => userinfo.to_owned(),
            };
            format!("{scheme}://{user}@{host}{path}")
        }
        None => format!("{scheme}://{authority}{path}"),
    }
}

/// The certificate and key files: both or neither.
fn tls_files(cert: String, key: String) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
    match (cert.is_empty(), key.is_empty()) {
        (true, true) => Ok(None),
        (false, false) => Ok(Some((PathBuf::from(cert), PathBuf::from(key)))),
        (false, true) => Err(ConfigError::Conflict(format!(
            "`tls.cert_file` is set ({cert}) but `tls.key_file` is not; set both, or neither for a self-signed certificate"
        ))),
        (true, false) => Err(ConfigError::Conflict(format!(
            "`tls.key_file` is set ({key}) but `tls.cert_file` is not; set both, or neither for a self-signed certificate"
        ))),
    }
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<(String, toml::Value)>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => out.push((prefix.to_owned(), other.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_make_a_working_single_node_server() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.domain, "localhost");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(
            (c.c2s_port, c.c2s_tls_port, c.s2s_port, c.http_port),
            (5222, 5223, 5269, 5280)
        );
        assert_eq!(c.bus.backend, Backend::Embedded);
        assert_eq!(c.bus.fsync, Fsync::Always);
        assert_eq!(c.system_chat_alias(), "conference-1-imbus.localhost");
    }

    #[test]
    fn file_then_env_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imbus.toml");
        std::fs::write(
            &path,
            "domain = \"example.com\"\nc2s_port = 15222\n[bus]\nbackend = \"kafka\"\nfsync = \"interval:20\"\n[bus.kafka]\nbootstrap = \"k1:9092,k2:9092\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&path),
            env(&[
                ("IMBUS_C2S_PORT", "25222"),
                ("IMBUS_DATA_DIR", "/var/lib/imbus"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.domain, "example.com");
        assert_eq!(c.c2s_port, 25222);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/imbus"));
        assert_eq!(c.bus.backend, Backend::Kafka);
        assert_eq!(c.bus.fsync, Fsync::Interval(Duration::from_millis(20)));
        assert_eq!(c.bus.kafka_bootstrap, "k1:9092,k2:9092");
        assert_eq!(
            c.value("c2s_port").unwrap().1,
            &Source::Env("IMBUS_C2S_PORT".into())
        );
        assert_eq!(c.value("domain").unwrap().1, &Source::File(path.clone()));
    }

    #[test]
    fn errors_name_key_value_source_and_what_is_allowed() {
        let e = Config::load(None, env(&[("IMBUS_HTTP_PORT", "http")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`http_port`"), "{e}");
        assert!(e.contains("IMBUS_HTTP_PORT"), "{e}");
        assert!(e.contains("\"http\""), "{e}");
        assert!(e.contains("1 to 65535"), "{e}");

        let e = Config::load(None, env(&[("IMBUS_BUS_BACKEND", "rabbit")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"rabbit\"") && e.contains("embedded") && e.contains("kafka"),
            "{e}"
        );

        let e = Config::load(None, env(&[("IMBUS_DOMAIN", "Bad Domain!")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`domain`") && e.contains("Bad Domain!"), "{e}");

        let e = Config::load(None, env(&[("IMBUS_BUS_FSYNC", "sometimes")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("always") && e.contains("interval:<milliseconds>"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_a_suggestion() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imbus.toml");
        std::fs::write(&path, "c2s_prot = 5222\n").unwrap();
        let e = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(e.contains("`c2s_prot`") && e.contains("c2s_port"), "{e}");

        let e = Config::load(None, env(&[("IMBUS_DOMIAN", "x")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("IMBUS_DOMIAN") && e.contains("domain"), "{e}");
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imbus.toml");
        std::fs::write(&path, "domain = \n").unwrap();
        let e = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(
            e.contains("imbus.toml") && e.contains("not valid TOML"),
            "{e}"
        );
    }

    #[test]
    fn registration_is_off_by_default_and_limited_per_address() {
        let c = Config::load(None, env(&[])).unwrap();
        assert!(!c.c2s.registration);
        assert_eq!(c.c2s.registration_per_hour, 5);
        let c = Config::load(
            None,
            env(&[
                ("IMBUS_C2S_REGISTRATION", "true"),
                ("IMBUS_C2S_REGISTRATION_PER_HOUR", "20"),
            ]),
        )
        .unwrap();
        assert!(c.c2s.registration);
        assert_eq!(c.c2s.registration_per_hour, 20);
        let e = Config::load(None, env(&[("IMBUS_C2S_REGISTRATION_PER_HOUR", "0")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("c2s.registration_per_hour"), "{e}");
    }

    #[test]
    fn c2s_settings_parse_and_validate() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.c2s.tls_files, None);
        assert!(c.c2s.require_tls);
        assert_eq!(c.c2s.resource_conflict, ResourceConflict::Replace);
        assert_eq!(c.c2s.max_stanza_bytes, 262_144);
        assert_eq!(c.c2s.auth_timeout, Duration::from_secs(30));
        assert_eq!(c.c2s.sm_resume_timeout, Duration::from_secs(300));

        let c = Config::load(
            None,
            env(&[
                ("IMBUS_TLS_CERT_FILE", "/etc/imbus/cert.pem"),
                ("IMBUS_TLS_KEY_FILE", "/etc/imbus/key.pem"),
                ("IMBUS_C2S_RESOURCE_CONFLICT", "refuse"),
                ("IMBUS_C2S_AUTH_TIMEOUT", "500ms"),
                ("IMBUS_SM_RESUME_TIMEOUT", "2m"),
                ("IMBUS_C2S_REQUIRE_TLS", "false"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.c2s.tls_files,
            Some(("/etc/imbus/cert.pem".into(), "/etc/imbus/key.pem".into()))
        );
        assert_eq!(c.c2s.resource_conflict, ResourceConflict::Refuse);
        assert_eq!(c.c2s.auth_timeout, Duration::from_millis(500));
        assert_eq!(c.c2s.sm_resume_timeout, Duration::from_secs(120));
        assert!(!c.c2s.require_tls);

        let e = Config::load(None, env(&[("IMBUS_TLS_CERT_FILE", "/etc/imbus/cert.pem")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`tls.key_file`") && e.contains("cert.pem"),
            "{e}"
        );
        let e = Config::load(None, env(&[("IMBUS_SM_RESUME_TIMEOUT", "forever")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`sm.resume_timeout`") && e.contains("forever") && e.contains("1s to 24h"),
            "{e}"
        );
        let e = Config::load(None, env(&[("IMBUS_C2S_MAX_STANZA_BYTES", "100")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("10000"), "{e}");
        let e = Config::load(None, env(&[("IMBUS_C2S_RESOURCE_CONFLICT", "kick")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("replace, refuse"), "{e}");
    }

    #[test]
    fn compliance_settings_parse_and_validate() {
        let c = Config::load(None, env(&[])).unwrap();
        assert!(c.compliance.enabled && c.compliance.embedded);
        assert_eq!(c.compliance.database_url, "");
        assert!(c.compliance.archive_inbound && !c.compliance.archive_outbound);
        assert_eq!(
            c.compliance.kinds,
            ["chat", "normal", "groupchat", "headline"]
        );
        assert_eq!(c.compliance.pool_size, 5);
        assert_eq!(c.compliance.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(c.compliance.batch_wait, Duration::from_millis(100));

        let c = Config::load(
            None,
            env(&[
                ("IMBUS_COMPLIANCE_KINDS", " chat , groupchat"),
                (
                    "IMBUS_COMPLIANCE_DATABASE_URL",
                    "postgres://archiver:secret@db:5432/im",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(c.compliance.kinds, ["chat", "groupchat"]);
        assert_eq!(
            c.compliance.database_url,
            "postgres://archiver:secret@db:5432/im"
        );

        for bad in ["", "chat,chat", "chat,sms"] {
            let e = Config::load(None, env(&[("IMBUS_COMPLIANCE_KINDS", bad)]))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("`compliance.kinds`") && e.contains("headline"),
                "{e}"
            );
        }
        let e = Config::load(
            None,
            env(&[("IMBUS_COMPLIANCE_DATABASE_URL", "oracle://db/im")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`compliance.database_url`") && e.contains("mysql://"),
            "{e}"
        );
        let live = c
            .with_override(&c, "compliance.archive_outbound", Some("true"))
            .unwrap();
        assert!(live.compliance.archive_outbound);
        assert!(
            c.with_override(&c, "compliance.database_url", Some("sqlite:x"))
                .is_err()
        );
    }

    #[test]
    fn rooms_are_on_by_default_with_fifteen_messages_of_history() {
        let c = Config::load(None, env(&[])).unwrap();
        assert!(c.rooms.enabled && c.rooms.embedded);
        assert_eq!(c.rooms.history_for_new_joiners, 15);
        assert_eq!(c.rooms.max_history_length, 50);
        assert_eq!(c.system_chat_alias(), "conference-1-imbus.localhost");
        let e = Config::load(None, env(&[("IMBUS_ROOMS_HISTORY_FOR_NEW_JOINERS", "60")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`rooms.max_history_length`") && e.contains("60"),
            "{e}"
        );
        let c = Config::load(
            None,
            env(&[
                ("IMBUS_ROOMS_HISTORY_FOR_NEW_JOINERS", "3"),
                ("IMBUS_ROOMS_ENABLED", "false"),
            ]),
        )
        .unwrap();
        assert_eq!(c.rooms.history_for_new_joiners, 3);
        assert!(!c.rooms.enabled);
    }

    #[test]
    fn mam_is_on_by_default_and_keeps_a_year() {
        let c = Config::load(None, env(&[])).unwrap();
        assert!(c.mam.enabled && c.mam.embedded);
        assert_eq!(c.mam.retention, Some(Duration::from_secs(365 * 24 * 3600)));
        let c = Config::load(
            None,
            env(&[
                ("IMBUS_MAM_RETENTION", "0"),
                ("IMBUS_MAM_EMBEDDED", "false"),
            ]),
        )
        .unwrap();
        assert_eq!(c.mam.retention, None);
        assert!(!c.mam.embedded);
        let e = Config::load(None, env(&[("IMBUS_MAM_RETENTION", "a year")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`mam.retention`") && e.contains("a year"), "{e}");
    }

    #[test]
    fn port_conflicts_are_caught() {
        let e = Config::load(None, env(&[("IMBUS_HTTP_PORT", "5222")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("c2s_port") && e.contains("http_port"), "{e}");
        // Different addresses may share a port number.
        Config::load(
            None,
            env(&[
                ("IMBUS_HTTP_PORT", "5222"),
                ("IMBUS_BIND", "127.0.0.2"),
                ("IMBUS_HTTP_BIND", "127.0.0.1"),
            ]),
        )
        .unwrap();
        // Port 0 means any free port and never conflicts.
        Config::load(
            None,
            env(&[("IMBUS_HTTP_PORT", "0"), ("IMBUS_C2S_PORT", "0")]),
        )
        .unwrap();
    }

    #[test]
    fn live_overrides_validate_and_reset() {
        let base = Config::load(None, env(&[("IMBUS_LOG_LEVEL", "warn")])).unwrap();
        let live = base
            .with_override(&base, "log_level", Some("imbus=debug,info"))
            .unwrap();
        assert_eq!(live.log_level, "imbus=debug,info");
        assert_eq!(live.value("log_level").unwrap().1, &Source::Live);
        let reset = live.with_override(&base, "log_level", None).unwrap();
        assert_eq!(reset.log_level, "warn");

        let e = base
            .with_override(&base, "c2s_port", Some("1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("IMBUS_C2S_PORT") && e.contains("restart"), "{e}");
        let e = base
            .with_override(&base, "log_level", Some("loud"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`log_level`") && e.contains("loud"), "{e}");
        assert!(base.with_override(&base, "nope", Some("1")).is_err());
    }

    #[test]
    fn every_setting_default_is_valid_and_env_names_are_unique() {
        let mut envs = std::collections::HashSet::new();
        for s in SETTINGS {
            assert!(s.kind.parse(s.default).is_ok(), "default of {}", s.name);
            assert!(
                envs.insert(s.env_name()),
                "duplicate env name for {}",
                s.name
            );
            assert!(!s.help.is_empty());
        }
    }
}
