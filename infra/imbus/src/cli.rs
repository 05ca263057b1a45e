//! Command-line interface.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use imbus_config::Config;

/// imbus — enterprise IM & Presence server (XMPP) on an event log.
#[derive(Debug, Parser)]
#[command(name = "imbus", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (TOML). Without it, ./imbus.toml is used if present, else the
    /// defaults; every setting can also be set with an IMBUS_* environment variable.
    #[arg(short, long, global = true, env = "IMBUS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole system on this node (gateways, processors and connectors in one
    /// process; on the embedded log, nothing else is needed).
    Serve,
    /// Run only the router (where every stanza goes), against the configured bus. On
    /// Kafka, routers can run as their own processes, as many as there are partitions;
    /// set `router.embedded = false` on the `serve` nodes then.
    Route,
    /// Run a connector alone, against the configured bus (set `<connector>.embedded =
    /// false` on the `serve` nodes then).
    #[command(subcommand)]
    Connect(ConnectCommand),
    /// Replay a topic into an external system.
    #[command(subcommand)]
    Replay(ReplayCommand),
    /// Look at what is archived for compliance.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Run only the message archive processor (answers XEP-0313 archive queries) against
    /// the configured bus; set `mam.embedded = false` on the `serve` nodes then.
    Archive,
    /// Run only the rooms processor (XEP-0045 chat rooms at the chat node alias
    /// conference-<node_id>-<cluster_id>.<domain>) against the configured bus; set
    /// `rooms.embedded = false` on the `serve` nodes then.
    Rooms,
    /// Send a message from the server to every user, or to the users given with --to;
    /// offline users get it at their next login.
    Announce {
        /// A recipient's bare JID (repeatable); without any, every account.
        #[arg(long = "to", value_name = "JID")]
        to: Vec<String>,
        /// A subject line.
        #[arg(long)]
        subject: Option<String>,
        /// The text.
        body: String,
    },
    /// Inspect and change settings.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage user accounts (on the running server, or on the log when it is stopped).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage chat node aliases, the domains chat rooms are reached at (on the running
    /// server, or on the log when it is stopped).
    #[command(subcommand)]
    Alias(AliasCommand),
}

#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// List the chat nodes and their aliases.
    List,
    /// Add a manual alias (a domain such as chat.example.com) to a chat node.
    Add {
        alias: String,
        /// The chat node (default: this node's node_id).
        #[arg(long)]
        node: Option<u32>,
    },
    /// Rename a manual alias and/or move it to another chat node (system aliases cannot
    /// be edited: turn them off first).
    Edit {
        alias: String,
        /// The new alias.
        #[arg(long)]
        to: Option<String>,
        /// The chat node it moves to.
        #[arg(long)]
        node: Option<u32>,
    },
    /// Delete a manual alias (rooms created under it are no longer reachable).
    Del { alias: String },
    /// Turn system-managed aliases (conference-<node_id>-<cluster_id>.<domain>) on or
    /// off; off turns each system alias into a manual one.
    System { state: OnOff },
    /// Add or delete chat nodes.
    #[command(subcommand)]
    Node(AliasNodeCommand),
}

#[derive(Debug, Subcommand)]
pub enum AliasNodeCommand {
    /// Add a chat node (it gets its system alias while they are on).
    Add { id: u32 },
    /// Delete a chat node and its system alias (refused while it has manual aliases).
    Del { id: u32 },
}

/// A switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Subcommand)]
pub enum ConnectCommand {
    /// The compliance sink: archives every IM of the compliance topic into the database
    /// of `compliance.database_url` (consumer group compliance-sink); serves /metrics and
    /// /healthz on http_bind:http_port.
    Compliance,
    /// The room archive: persistent rooms and their transcripts into the database of
    /// `rooms.archive.database_url`, and archive queries to rooms answered from it
    /// (consumer group room-archive); serves /metrics and /healthz on
    /// http_bind:http_port.
    RoomArchive,
}

#[derive(Debug, Subcommand)]
pub enum ReplayCommand {
    /// Write the compliance records of a time range (message time, RFC 3339) into a
    /// database, idempotently: rows already there are left alone. Prints progress and a
    /// summary (read / written / already present). On the embedded log, stop the server
    /// first.
    Compliance {
        /// Start of the range, included (e.g. 2026-12-01T00:00:00Z).
        #[arg(long)]
        from: String,
        /// End of the range, excluded.
        #[arg(long)]
        to: String,
        /// The database URL (postgres://, mysql://, mariadb:// or sqlite:).
        #[arg(long, value_name = "DATABASE_URL")]
        into: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Follow the compliance topic, printing one JSON object per record (new records
    /// only, unless --from or --from-beginning). On the embedded log, stop the server
    /// first.
    Tail {
        /// Start with the records logged at or after this time (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// Start with the oldest record kept.
        #[arg(long)]
        from_beginning: bool,
        /// Stop after this many records.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Export from the compliance database every message a user received or sent in a
    /// time range, oldest first.
    Export {
        /// The user's bare JID.
        #[arg(long)]
        user: String,
        /// Start of the range, included (RFC 3339, e.g. 2026-12-01T00:00:00Z).
        #[arg(long)]
        from: String,
        /// End of the range, excluded.
        #[arg(long)]
        to: String,
        #[arg(long, value_enum, default_value = "csv")]
        format: crate::audit::ExportFormat,
        /// The database URL; default: the configured compliance database.
        #[arg(long, value_name = "DATABASE_URL")]
        database: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account. Without --password, the password is read from the terminal
    /// (or the first line of standard input).
    Add {
        jid: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// Change an account's password.
    Passwd {
        jid: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// Delete an account.
    Del { jid: String },
    /// List every account.
    List,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print every effective setting and its source.
    Check,
    /// List every setting with its value, source and description.
    List,
    /// Print one setting's effective value.
    Get { key: String },
    /// Change a live setting (on the running server, or on the log when it is stopped).
    Set { key: String, value: String },
    /// Return a live setting to its file/environment/default value.
    Reset { key: String },
}

/// Loads the configuration the way `serve` does: --config / IMBUS_CONFIG, else
/// ./imbus.toml if it exists, then the environment.
pub fn load_config(file: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let default = PathBuf::from("imbus.toml");
    let file = match file {
        Some(f) => Some(f.to_owned()),
        None if default.is_file() => Some(default),
        None => None,
    };
    Config::load(file.as_deref(), std::env::vars()).context("invalid configuration")
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = load_config(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => crate::serve::serve(config).await,
        Command::Route => crate::route::route(config).await,
        Command::Connect(ConnectCommand::Compliance) => {
            crate::connect::connect(config, crate::connect::ConnectorKind::Compliance).await
        }
        Command::Connect(ConnectCommand::RoomArchive) => {
            crate::connect::connect(config, crate::connect::ConnectorKind::RoomArchive).await
        }
        Command::Audit(AuditCommand::Tail {
            from,
            from_beginning,
            limit,
        }) => crate::audit::tail(config, from, from_beginning, limit).await,
        Command::Audit(AuditCommand::Export {
            user,
            from,
            to,
            format,
            database,
        }) => crate::audit::export(config, &user, &from, &to, format, database).await,
        Command::Replay(ReplayCommand::Compliance { from, to, into }) => {
            crate::connect::replay_compliance(config, &from, &to, &into).await
        }
        Command::Archive => crate::archive::archive(config).await,
        Command::Rooms => crate::rooms::rooms(config).await,
        Command::Announce { to, subject, body } => {
            crate::announce::run(config, to, subject, body).await
        }
        Command::Config(cmd) => crate::config_cmd::run(config, cmd).await,
        Command::User(cmd) => crate::user_cmd::run(config, cmd).await,
        Command::Alias(cmd) => crate::alias_cmd::run(config, cmd).await,
    }
}
