//! The declaration of every setting: name, type, default, help, whether it is live.

use std::net::IpAddr;
use std::time::Duration;

use crate::Fsync;

/// One setting.
#[derive(Debug)]
pub struct SettingSpec {
    /// Dotted name: the TOML path, the key on the `config` topic and in the admin API.
    pub name: &'static str,
    pub kind: Kind,
    pub default: &'static str,
    pub help: &'static str,
    /// Can be changed while the server runs (through the `config` topic).
    pub live: bool,
}

impl SettingSpec {
    /// `IMBUS_` + the name in upper case, dots as underscores.
    pub fn env_name(&self) -> String {
        format!("IMBUS_{}", self.name.to_ascii_uppercase().replace('.', "_"))
    }
}

/// The type of a setting, which decides how its text is parsed and validated.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Bool,
    /// A TCP port; 0 means any free port (the bound port is logged and written to the
    /// data directory's `run/` files).
    Port,
    Int {
        min: i64,
        max: i64,
    },
    /// An XMPP domain (RFC 7622 domainpart written as an ASCII host name).
    Domain,
    /// A short identifier: lower-case letters, digits and '-'.
    Ident,
    Path,
    /// A path, or empty for none.
    OptionalPath,
    /// A duration: a whole number with a unit (`ms`, `s`, `m`, `h`; no unit means seconds),
    /// within the bounds (milliseconds).
    Duration {
        min_ms: u64,
        max_ms: u64,
    },
    Ip,
    Choice(&'static [&'static str]),
    Fsync,
    /// A `tracing` filter such as `info` or `imbus=debug,warn`.
    LogFilter,
    /// A non-empty comma-separated list of `host:port`.
    HostPorts,
    /// A non-empty comma-separated list of distinct options.
    ChoiceList(&'static [&'static str]),
    /// A database URL (`postgres://`, `postgresql://`, `mysql://`, `mariadb://` or
    /// `sqlite:`), or empty for the default.
    DatabaseUrl,
    /// The chat node alias table ([`crate::aliases::ChatNodes`] in its stored form).
    ChatNodes,
}

pub(crate) enum Value {
    Str(String),
    Int(i64),
    Duration(Duration),
    Ip(IpAddr),
    Fsync(Fsync),
}

impl Value {
    pub(crate) fn string(self) -> String {
        match self {
            Value::Str(s) => s,
            Value::Int(i) => i.to_string(),
            Value::Ip(ip) => ip.to_string(),
            Value::Duration(d) => format!("{}ms", d.as_millis()),
            Value::Fsync(_) => String::new(),
        }
    }
    pub(crate) fn int(self) -> i64 {
        match self {
            Value::Int(i) => i,
            _ => 0,
        }
    }
    pub(crate) fn duration(self) -> Duration {
        match self {
            Value::Duration(d) => d,
            _ => Duration::ZERO,
        }
    }
    pub(crate) fn ip(self) -> IpAddr {
        match self {
            Value::Ip(ip) => ip,
            _ => IpAddr::from([0, 0, 0, 0]),
        }
    }
    pub(crate) fn fsync(self) -> Fsync {
        match self {
            Value::Fsync(f) => f,
            _ => Fsync::Always,
        }
    }
}

const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

impl Kind {
    /// What the setting accepts, for error messages.
    pub fn expected(&self) -> String {
        match self {
            Kind::Bool => "expected true or false".into(),
            Kind::Port => "expected a port number from 1 to 65535 (or 0 for any free port)".into(),
            Kind::Int { min, max } => format!("expected a whole number from {min} to {max}"),
            Kind::Domain => "expected a domain name such as example.com: labels of a-z, 0-9 and '-', separated by dots, at most 253 characters".into(),
            Kind::Ident => "expected 1 to 63 characters of a-z, 0-9 and '-'".into(),
            Kind::Path => "expected a non-empty path".into(),
            Kind::OptionalPath => "expected a path, or an empty value for none".into(),
            Kind::Duration { min_ms, max_ms } => format!(
                "expected a duration from {} to {}: a whole number with a unit ms, s, m or h (no unit means seconds), e.g. 30s",
                show_ms(*min_ms),
                show_ms(*max_ms)
            ),
            Kind::Ip => "expected an IP address such as 0.0.0.0, 127.0.0.1 or ::".into(),
            Kind::Choice(options) => format!("expected one of: {}", options.join(", ")),
            Kind::Fsync => "expected always, never or interval:<milliseconds> (1 to 60000)".into(),
            Kind::LogFilter => format!(
                "expected a log filter: comma-separated directives, each a level ({}) or target=level",
                LEVELS.join(", ")
            ),
            Kind::HostPorts => "expected a comma-separated list of host:port".into(),
            Kind::ChoiceList(options) => format!(
                "expected a comma-separated list of distinct values among: {}",
                options.join(", ")
            ),
            Kind::DatabaseUrl => "expected a database URL starting with postgres://, postgresql://, mysql://, mariadb:// or sqlite:, or an empty value for the default".into(),
            Kind::ChatNodes => "expected the chat node alias table as `imbus alias` writes it (change it with `imbus alias`)".into(),
        }
    }

    pub(crate) fn parse(&self, text: &str) -> Result<Value, String> {
        let t = text.trim();
        let bad = || Err(self.expected());
        match self {
            Kind::Bool => match t {
                "true" => Ok(Value::Int(1)),
                "false" => Ok(Value::Int(0)),
                _ => bad(),
            },
            Kind::Port => match t.parse::<u16>() {
                Ok(p) => Ok(Value::Int(i64::from(p))),
                Err(_) => bad(),
            },
            Kind::Int { min, max } => match t.parse::<i64>() {
                Ok(i) if (*min..=*max).contains(&i) => Ok(Value::Int(i)),
                _ => bad(),
            },
            Kind::Domain => {
                let ok = !t.is_empty()
                    && t.len() <= 253
                    && t.split('.').all(|label| {
                        !label.is_empty()
                            && label.len() <= 63
                            && !label.starts_with('-')
                            && !label.ends_with('-')
                            && label
                                .bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    });
                if ok {
                    Ok(Value::Str(t.to_owned()))
                } else {
                    bad()
                }
            }
            Kind::Ident => {
                let ok = !t.is_empty()
                    && t.len() <= 63
                    && t.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if ok {
                    Ok(Value::Str(t.to_owned()))
                } else {
                    bad()
                }
            }
            Kind::Path => {
                if t.is_empty() {
                    bad()
                } else {
                    Ok(Value::Str(t.to_owned()))
                }
            }
            Kind::OptionalPath => Ok(Value::Str(t.to_owned())),
            Kind::Duration { min_ms, max_ms } => match parse_duration(t) {
                Some(d) if (*min_ms..=*max_ms).contains(&(d.as_millis() as u64)) => {
                    Ok(Value::Duration(d))
                }
                _ => bad(),
            },
            Kind::Ip => t.parse::<IpAddr>().map(Value::Ip).or_else(|_| bad()),
            Kind::Choice(options) => {
                if options.contains(&t) {
                    Ok(Value::Str(t.to_owned()))
                } else {
                    bad()
                }
            }
            Kind::Fsync => match t {
                "always" => Ok(Value::Fsync(Fsync::Always)),
                "never" => Ok(Value::Fsync(Fsync::Never)),
                _ => match t.strip_prefix("interval:").map(str::parse::<u64>) {
                    Some(Ok(ms)) if (1..=60_000).contains(&ms) => {
                        Ok(Value::Fsync(Fsync::Interval(Duration::from_millis(ms))))
                    }
                    _ => bad(),
                },
            },
            Kind::LogFilter => {
                let ok = !t.is_empty()
                    && t.split(',').all(|d| {
                        let d = d.trim();
                        match d.split_once('=') {
                            Some((target, level)) => {
                                !target.is_empty()
                                    && target.bytes().all(|b| {
                                        b.is_ascii_alphanumeric()
                                            || b == b'_'
                                            || b == b':'
                                            || b == b'-'
                                    })
                                    && LEVELS.contains(&level)
                            }
                            None => LEVELS.contains(&d),
                        }
                    });
                if ok {
                    Ok(Value::Str(t.to_owned()))
                } else {
                    bad()
                }
            }
            Kind::HostPorts => {
                let ok = !t.is_empty()
                    && t.split(',').all(|hp| match hp.trim().rsplit_once(':') {
                        Some((host, port)) => {
                            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                        }
                        None => false,
                    });
                if ok {
                    Ok(Value::Str(t.to_owned()))
                } else {
                    bad()
                }
            }
            Kind::ChoiceList(options) => {
                let items: Vec<&str> = t.split(',').map(str::trim).collect();
                let distinct = items
                    .iter()
                    .enumerate()
                    .all(|(i, item)| !items[..i].contains(item));
                if !t.is_empty() && distinct && items.iter().all(|i| options.contains(i)) {
                    Ok(Value::Str(items.join(",")))
                } else {
                    bad()
                }
            }
            Kind::DatabaseUrl => {
                let schemes = ["postgres://", "postgresql://", "mysql://", "mariadb://"];
                let ok = t.is_empty()
                    || (t.starts_with("sqlite:") && t.len() > "sqlite:".len())
                    || schemes
                        .iter()
                        .any(|s| t.starts_with(s) && t.len() > s.len());
                if ok {
                    Ok(Value::Str(t.to_owned()))
                } else {
                    bad()
                }
            }
            Kind::ChatNodes => match crate::aliases::ChatNodes::parse(t) {
                Ok(_) => Ok(Value::Str(t.to_owned())),
                Err(e) => Err(format!("{e}; {}", self.expected())),
            },
        }
    }
}

/// `500ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
fn parse_duration(text: &str) -> Option<Duration> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let n: u64 = number.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// A bound of a duration setting, in the largest unit that divides it.
fn show_ms(ms: u64) -> String {
    if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Every setting imbus knows.
pub static SETTINGS: &[SettingSpec] = &[
    SettingSpec {
        name: "domain",
        kind: Kind::Domain,
        default: "localhost",
        help: "The IM domain this server hosts (the part after @ in user addresses).",
        live: false,
    },
    SettingSpec {
        name: "data_dir",
        kind: Kind::Path,
        default: "./data",
        help: "Where the embedded log, the SQLite archive, certificates and run files live.",
        live: false,
    },
    SettingSpec {
        name: "node_id",
        kind: Kind::Int {
            min: 1,
            max: 65_535,
        },
        default: "1",
        help: "This node's number in the cluster (part of the system chat node alias).",
        live: false,
    },
    SettingSpec {
        name: "cluster_id",
        kind: Kind::Ident,
        default: "imbus",
        help: "The cluster's identifier (part of the system chat node alias).",
        live: false,
    },
    SettingSpec {
        name: "bind",
        kind: Kind::Ip,
        default: "0.0.0.0",
        help: "Address the XMPP listeners (c2s, direct TLS, s2s) bind to.",
        live: false,
    },
    SettingSpec {
        name: "c2s_port",
        kind: Kind::Port,
        default: "5222",
        help: "Client-to-server port (STARTTLS).",
        live: false,
    },
    SettingSpec {
        name: "c2s_tls_port",
        kind: Kind::Port,
        default: "5223",
        help: "Client-to-server port with direct TLS (XEP-0368).",
        live: false,
    },
    SettingSpec {
        name: "s2s_port",
        kind: Kind::Port,
        default: "5269",
        help: "Server-to-server port.",
        live: false,
    },
    SettingSpec {
        name: "http_bind",
        kind: Kind::Ip,
        default: "0.0.0.0",
        help: "Address the HTTP listener (health, metrics, admin API, WebSocket) binds to.",
        live: false,
    },
    SettingSpec {
        name: "http_port",
        kind: Kind::Port,
        default: "5280",
        help: "HTTP port: /healthz, /metrics, the admin API and XMPP over WebSocket.",
        live: false,
    },
    SettingSpec {
        name: "log_level",
        kind: Kind::LogFilter,
        default: "info",
        help: "What is logged, e.g. info or imbus=debug,warn. Changes apply live.",
        live: true,
    },
    SettingSpec {
        name: "log_format",
        kind: Kind::Choice(&["text", "json"]),
        default: "text",
        help: "Log line format: human-readable text or one JSON object per line.",
        live: false,
    },
    SettingSpec {
        name: "auth.scram_iterations",
        kind: Kind::Int {
            min: 4096,
            max: 10_000_000,
        },
        default: "10000",
        help: "PBKDF2 iterations of the SCRAM credentials stored for new and changed passwords (at least 4096).",
        live: true,
    },
    SettingSpec {
        name: "tls.cert_file",
        kind: Kind::OptionalPath,
        default: "",
        help: "PEM certificate chain (leaf first) of the XMPP listeners. Empty: a self-signed certificate is generated in data_dir/tls on first start (for evaluation only). Set together with tls.key_file.",
        live: false,
    },
    SettingSpec {
        name: "tls.key_file",
        kind: Kind::OptionalPath,
        default: "",
        help: "PEM private key (PKCS#8, PKCS#1 or SEC1) of tls.cert_file.",
        live: false,
    },
    SettingSpec {
        name: "c2s.require_tls",
        kind: Kind::Bool,
        default: "true",
        help: "Require TLS before authentication: STARTTLS is mandatory on c2s_port, and unencrypted WebSocket connections are refused.",
        live: false,
    },
    SettingSpec {
        name: "c2s.resource_conflict",
        kind: Kind::Choice(&["replace", "refuse"]),
        default: "replace",
        help: "When a client binds a resource another session holds: replace ends the older session with a conflict error; refuse refuses the new bind.",
        live: false,
    },
    SettingSpec {
        name: "c2s.max_stanza_bytes",
        kind: Kind::Int {
            min: 10_000,
            max: 16 << 20,
        },
        default: "262144",
        help: "Largest stanza a client may send, in bytes (advertised with XEP-0478); a larger one closes the stream with policy-violation.",
        live: false,
    },
    SettingSpec {
        name: "c2s.auth_timeout",
        kind: Kind::Duration {
            min_ms: 100,
            max_ms: 600_000,
        },
        default: "30s",
        help: "Time a new client connection has to authenticate and bind a resource.",
        live: false,
    },
    SettingSpec {
        name: "c2s.websocket_tls_proxy",
        kind: Kind::Bool,
        default: "false",
        help: "XMPP over WebSocket (/xmpp-websocket on http_port) reaches imbus through a reverse proxy that terminates TLS (wss://): treat those connections as encrypted. Only set this when the HTTP port is not reachable directly.",
        live: false,
    },
    SettingSpec {
        name: "c2s.registration",
        kind: Kind::Bool,
        default: "false",
        help: "In-Band Registration (XEP-0077): clients may create their own account over an encrypted stream before logging in, change their password and delete their account. Off: accounts are made with `imbus user` or the admin API only.",
        live: false,
    },
    SettingSpec {
        name: "c2s.registration_per_hour",
        kind: Kind::Int {
            min: 1,
            max: 1_000_000,
        },
        default: "5",
        help: "Accounts one IP address may try to create per hour through In-Band Registration; further attempts are refused with resource-constraint.",
        live: false,
    },
    SettingSpec {
        name: "sm.resume_timeout",
        kind: Kind::Duration {
            min_ms: 1000,
            max_ms: 86_400_000,
        },
        default: "300s",
        help: "How long a client whose connection broke may resume its session (XEP-0198 Stream Management); deliveries for it are kept meanwhile.",
        live: false,
    },
    SettingSpec {
        name: "router.embedded",
        kind: Kind::Bool,
        default: "true",
        help: "Run the router inside `imbus serve`. Set false on Kafka deployments that run routers as separate `imbus route` processes.",
        live: false,
    },
    SettingSpec {
        name: "im.enabled",
        kind: Kind::Bool,
        default: "true",
        help: "Instant messaging between users. When false, messages are refused with a service-unavailable error saying so.",
        live: true,
    },
    SettingSpec {
        name: "presence.enabled",
        kind: Kind::Bool,
        default: "true",
        help: "Availability (presence) sharing. When false, presence stanzas are refused with a service-unavailable error saying so; rosters still work, and messages to a user go to all of their signed-in clients.",
        live: true,
    },
    SettingSpec {
        name: "offline.enabled",
        kind: Kind::Bool,
        default: "true",
        help: "Store messages for users with no available client and deliver them at their next login (XEP-0160). When false, the sender gets service-unavailable.",
        live: true,
    },
    SettingSpec {
        name: "offline.quota",
        kind: Kind::Int {
            min: 1,
            max: 1_000_000,
        },
        default: "1000",
        help: "Most offline messages stored per user; further messages are refused with resource-constraint.",
        live: true,
    },
    SettingSpec {
        name: "im.lock_idle_timeout",
        kind: Kind::Duration {
            min_ms: 1000,
            max_ms: 86_400_000,
        },
        default: "600s",
        help: "How long a conversation stays locked to the client that replied when nothing is said (lock-on-reply).",
        live: true,
    },
    SettingSpec {
        name: "disco.expose_version",
        kind: Kind::Bool,
        default: "false",
        help: "Answer XEP-0092 software version requests with the server's name and version.",
        live: true,
    },
    SettingSpec {
        name: "compliance.enabled",
        kind: Kind::Bool,
        default: "true",
        help: "Archive every IM (one row per recipient) into the compliance database: the sink follows the compliance topic (consumer group compliance-sink).",
        live: false,
    },
    SettingSpec {
        name: "compliance.embedded",
        kind: Kind::Bool,
        default: "true",
        help: "Run the compliance sink inside `imbus serve`. Set false to run it as its own process with `imbus connect compliance`.",
        live: false,
    },
    SettingSpec {
        name: "compliance.database_url",
        kind: Kind::DatabaseUrl,
        default: "",
        help: "The compliance database: postgres://user:password@host:5432/db, mysql://user:password@host:3306/db (MySQL or MariaDB) or sqlite:/path/file. Empty: SQLite file data_dir/compliance.sqlite. Tables are created and upgraded at connection.",
        live: false,
    },
    SettingSpec {
        name: "compliance.archive_inbound",
        kind: Kind::Bool,
        default: "true",
        help: "Archive messages received by local users.",
        live: true,
    },
    SettingSpec {
        name: "compliance.archive_outbound",
        kind: Kind::Bool,
        default: "false",
        help: "Also archive messages local users send to other clusters or domains (recommended for intercluster and federated deployments, or each archive holds half of those conversations).",
        live: true,
    },
    SettingSpec {
        name: "compliance.kinds",
        kind: Kind::ChoiceList(&["chat", "normal", "groupchat", "headline"]),
        default: "chat,normal,groupchat,headline",
        help: "Message types archived, comma-separated: chat, normal, groupchat, headline.",
        live: true,
    },
    SettingSpec {
        name: "compliance.pool_size",
        kind: Kind::Int { min: 1, max: 100 },
        default: "5",
        help: "Connections the compliance sink keeps open to its database (on SQLite always one: it writes one transaction at a time).",
        live: false,
    },
    SettingSpec {
        name: "compliance.heartbeat_interval",
        kind: Kind::Duration {
            min_ms: 1000,
            max_ms: 3_600_000,
        },
        default: "30s",
        help: "How often the compliance sink checks its database while there is nothing to write (a failure raises the alarm metric imbus_compliance_sink_up = 0).",
        live: true,
    },
    SettingSpec {
        name: "compliance.batch_wait",
        kind: Kind::Duration {
            min_ms: 0,
            max_ms: 10_000,
        },
        default: "100ms",
        help: "How long the compliance sink waits for more records before writing a batch smaller than 2,000 rows (one transaction per batch: fewer, larger transactions cost the database far less per row). 0: every batch is written as soon as it is read.",
        live: true,
    },
    SettingSpec {
        name: "mam.enabled",
        kind: Kind::Bool,
        default: "true",
        help: "Message Archive Management (XEP-0313): one-to-one messages are archived per user on the archive topic and clients can query their archive. When false, nothing is archived and archive queries get service-unavailable.",
        live: false,
    },
    SettingSpec {
        name: "mam.embedded",
        kind: Kind::Bool,
        default: "true",
        help: "Run the archive processor (answers XEP-0313 queries) inside `imbus serve`. Set false on deployments that run it as separate `imbus archive` processes.",
        live: false,
    },
    SettingSpec {
        name: "mam.retention",
        kind: Kind::Duration {
            min_ms: 0,
            max_ms: 876_000 * 3_600_000,
        },
        default: "8760h",
        help: "How long archived messages are kept (default 8760h, 365 days; whole log segments are removed once older). 0 keeps them forever.",
        live: false,
    },
    SettingSpec {
        name: "rooms.aliases",
        kind: Kind::ChatNodes,
        default: "",
        help: "The chat nodes and their aliases, cluster-wide: the domains the chat service answers at (a room's address is room@alias, and the alias is part of the room's identity). Managed with `imbus alias` and /admin/v1/aliases rather than set by hand. While system aliases are on (the default), every chat node (an `imbus serve` running rooms, or an `imbus rooms`, with its node_id) registers at start with its system alias conference-<node_id>-<cluster_id>.<domain>, which cannot be edited or deleted. Administrators add further (manual) aliases to any node; aliases are unique and never the IM domain. Turning system aliases off, or changing cluster_id or domain, turns the former system alias into a manual one, so rooms created under it stay addressable. Deleting a node drops its system alias until it is added to another node. Changes apply at once.",
        live: true,
    },
    SettingSpec {
        name: "rooms.enabled",
        kind: Kind::Bool,
        default: "true",
        help: "Chat rooms (XEP-0045 multi-user chat) at the chat node aliases (rooms.aliases: by default each chat node's conference-<node_id>-<cluster_id>.<domain>). When false, the server does not list the chat service and stanzas to it get remote-server-not-found.",
        live: false,
    },
    SettingSpec {
        name: "rooms.embedded",
        kind: Kind::Bool,
        default: "true",
        help: "Run the rooms processor inside `imbus serve`. Set false on deployments that run it as separate `imbus rooms` processes.",
        live: false,
    },
    SettingSpec {
        name: "rooms.history_for_new_joiners",
        kind: Kind::Int { min: 0, max: 1000 },
        default: "15",
        help: "Number of messages in chat history displayed for new participants: the last messages a room pushes to whoever enters it (rooms whose owner chose a history length keep theirs). At most rooms.max_history_length. Changes apply at once.",
        live: true,
    },
    SettingSpec {
        name: "rooms.max_history_length",
        kind: Kind::Int { min: 0, max: 1000 },
        default: "50",
        help: "The longest history a room keeps and sends to new participants, whatever its owner configures.",
        live: false,
    },
    SettingSpec {
        name: "rooms.persistent_chat",
        kind: Kind::Bool,
        default: "true",
        help: "Enable persistent chat: owners may make rooms persistent (they survive their last occupant and every restart) and persistent rooms are stored in the room-archive database (TC_ROOMS, TC_USERS). When false, configuring a room as persistent is refused with not-acceptable; rooms already persistent stay so. Changes apply at once.",
        live: true,
    },
    SettingSpec {
        name: "rooms.archive_all",
        kind: Kind::Bool,
        default: "true",
        help: "Archive all room messages: every group chat message of a persistent room goes to the room-archive database (TC_MSGARCHIVE, with a full-text index), and occupants can search the room's transcript with XEP-0313 (with full-text search, XEP-0431). Expect more load on the database. Changes apply at once to messages sent afterwards.",
        live: true,
    },
    SettingSpec {
        name: "rooms.archive.embedded",
        kind: Kind::Bool,
        default: "true",
        help: "Run the room-archive connector inside `imbus serve`. Set false to run it as its own process with `imbus connect room-archive`.",
        live: false,
    },
    SettingSpec {
        name: "rooms.archive.database_url",
        kind: Kind::DatabaseUrl,
        default: "",
        help: "The persistent chat database (one per cluster; not the compliance database): postgres://user:password@host:5432/db, mysql://user:password@host:3306/db (MySQL or MariaDB) or sqlite:/path/file. Empty: SQLite file data_dir/rooms.sqlite. Tables are created and upgraded at connection. While it is unreachable rooms keep working; the connector raises the alarm (imbus_room_archive_up = 0) and catches up from the log when it is back.",
        live: false,
    },
    SettingSpec {
        name: "rooms.archive.pool_size",
        kind: Kind::Int { min: 1, max: 100 },
        default: "4",
        help: "Number of connections to the persistent chat database (on SQLite always one).",
        live: false,
    },
    SettingSpec {
        name: "rooms.archive.heartbeat_interval",
        kind: Kind::Duration {
            min_ms: 1000,
            max_ms: 3_600_000,
        },
        default: "30s",
        help: "Database connection heartbeat interval: how often the room-archive connector checks its database while there is nothing to write (a failure raises the alarm metric imbus_room_archive_up = 0).",
        live: true,
    },
    SettingSpec {
        name: "bus.backend",
        kind: Kind::Choice(&["embedded", "kafka"]),
        default: "embedded",
        help: "Where the topics live: the embedded log (one process is the whole system) or a Kafka-protocol cluster.",
        live: false,
    },
    SettingSpec {
        name: "bus.partitions",
        kind: Kind::Int { min: 0, max: 1024 },
        default: "0",
        help: "Partitions of each topic imbus creates (the unit of scale-out of processors). 0: automatic, 1 on the embedded log (one process: more partitions only add fsync rounds) and 8 on Kafka; existing topics keep the partitions they were created with.",
        live: false,
    },
    SettingSpec {
        name: "bus.fsync",
        kind: Kind::Fsync,
        default: "always",
        help: "Embedded log: always (fsync before acknowledging, batched by group commit; a processor's outputs, which it makes again from its uncommitted inputs, are fsynced before the next offset commit instead), interval:<ms>, or never.",
        live: false,
    },
    SettingSpec {
        name: "bus.segment_bytes",
        kind: Kind::Int {
            min: 1 << 20,
            max: 1 << 34,
        },
        default: "67108864",
        help: "Embedded log: size at which a partition's segment file rolls (retention and compaction work on whole segments).",
        live: false,
    },
    SettingSpec {
        name: "bus.kafka.bootstrap",
        kind: Kind::HostPorts,
        default: "127.0.0.1:9092",
        help: "Kafka backend: bootstrap servers (host:port, comma-separated).",
        live: false,
    },
    SettingSpec {
        name: "bus.kafka.replication_factor",
        kind: Kind::Int { min: 1, max: 16 },
        default: "1",
        help: "Kafka backend: replication factor of the topics imbus creates (use 3 on a production cluster).",
        live: false,
    },
];

pub(crate) fn find(name: &str) -> Option<&'static SettingSpec> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// " (did you mean `x`?)" for the closest known name, or a pointer to the list.
pub(crate) fn suggestion(name: &str) -> String {
    let normalized = name.replace('_', ".").to_ascii_lowercase();
    let best = SETTINGS
        .iter()
        .map(|s| {
            (
                edit_distance(&normalized, &s.name.replace('_', ".")),
                s.name,
            )
        })
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, n)) if d <= 3 => format!(" (did you mean `{n}`?)"),
        _ => " (run `imbus config list` for every setting)".to_owned(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
