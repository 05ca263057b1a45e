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
    no_transparent_huge_pages();
    let cli = cli::Cli::parse();
    let workers = match worker_threads(
        std::env::var_os(WORKER_THREADS_VAR).as_deref(),
        std::thread::available_parallelism().map_or(1, usize::from),
    ) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("imbus: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(workers)
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

/// Turns transparent huge pages off for this process.
///
/// The allocator asks for huge pages for its arenas where the system leaves it to the
/// program (`madvise` mode, a common default). The kernel then zeroes 2 MiB at the first
/// touch of each, and the thread that touched it waits: a millisecond or more for the
/// async worker that every connection, the router and the deliveries share, several
/// times a second while memory grows. With 4 KiB pages that cost is spread out (the
/// effect on the tail is in docs/PERFORMANCE.md).
fn no_transparent_huge_pages() {
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        // Not fatal: only the tail latency is at stake. Tracing is not set up yet.
        eprintln!("imbus: cannot turn transparent huge pages off for this process: {e}");
    }
}

/// The environment variable that sets the number of async worker threads (tokio's own).
const WORKER_THREADS_VAR: &str = "TOKIO_WORKER_THREADS";

/// The async runtime's worker threads: `TOKIO_WORKER_THREADS` when set, otherwise one
/// fewer than the CPUs (at least one). The embedded log's writer and fsync threads and the
/// SQLite connection threads run beside the workers; a worker per CPU would make them
/// compete with each other for every core, and hand work between more threads.
fn worker_threads(var: Option<&std::ffi::OsStr>, cpus: usize) -> Result<usize, String> {
    let Some(value) = var else {
        return Ok(cpus.saturating_sub(1).max(1));
    };
    let text = value.to_string_lossy();
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(format!(
            "{WORKER_THREADS_VAR}={text:?} is not a number of worker threads: expected a whole number from 1 to 1024, or leave it unset for one fewer than the CPUs ({})",
            cpus.saturating_sub(1).max(1)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::worker_threads;
    use std::ffi::OsStr;

    #[test]
    fn one_worker_fewer_than_the_cpus_by_default() {
        assert_eq!(worker_threads(None, 1), Ok(1));
        assert_eq!(worker_threads(None, 2), Ok(1));
        assert_eq!(worker_threads(None, 16), Ok(15));
    }

    #[test]
    fn the_variable_sets_the_workers_and_bad_values_are_named() {
        assert_eq!(worker_threads(Some(OsStr::new("4")), 2), Ok(4));
        assert_eq!(worker_threads(Some(OsStr::new(" 2 ")), 8), Ok(2));
        for bad in ["0", "-1", "two", "", "5000"] {
            let Err(e) = worker_threads(Some(OsStr::new(bad)), 8) else {
                panic!("{bad:?} was accepted as a number of worker threads");
            };
            assert!(e.contains(&format!("TOKIO_WORKER_THREADS={bad:?}")), "{e}");
            assert!(e.contains("1 to 1024"), "{e}");
        }
    }
}
