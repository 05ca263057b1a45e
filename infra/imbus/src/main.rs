//! `imbus`: the one binary of the imbus IM & Presence server.
//!
//! `imbus serve` runs the whole system in one process on the embedded log (or against a
//! Kafka-protocol cluster with `bus.backend = "kafka"`); the other subcommands administer
//! a server, running or stopped.

mod accounts;
mod admin;
mod alias_cmd;
mod aliases;
mod announce;
mod archive;
mod audit;
mod bus;
mod cli;
mod client;
mod config_cmd;
mod connect;
mod live;
mod metrics;
mod rooms;
mod route;
mod serve;
mod standalone;
mod telemetry;
mod user_cmd;
mod xmpp;

use std::process::ExitCode;

use clap::Parser;

/// The process's allocator: mimalloc (see the `mimalloc` feature).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("imbus")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("imbus: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("imbus: {e:#}");
            ExitCode::FAILURE
        }
    }
}
