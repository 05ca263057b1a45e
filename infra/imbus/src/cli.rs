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
    /// Run only the message archive processor (answers XEP-0313 archive queries) against
    /// the configured bus; set `mam.embedded = false` on the `serve` nodes then.
    Archive,
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
        Command::Archive => crate::archive::archive(config).await,
        Command::Announce { to, subject, body } => {
            crate::announce::run(config, to, subject, body).await
        }
        Command::Config(cmd) => crate::config_cmd::run(config, cmd).await,
        Command::User(cmd) => crate::user_cmd::run(config, cmd).await,
    }
}
