//! The router's delivery rules, checked with a third-party client (slixmpp) against a real
//! server: forking to every available resource, lock-on-reply and its end, Message
//! Carbons (XEP-0280), messages to full JIDs, 1,000 messages in order, offline storage
//! with delay stamps and its quota, multicast (XEP-0033) to online and offline users,
//! blocking (XEP-0191), and the `im.enabled` / `presence.enabled` switches.
//!
//! The scenarios are in `tests/interop/slixmpp_im.py`; this file starts the servers,
//! creates the accounts the script lists with `imbus user add`, and runs it. One test runs
//! `imbus serve` on the embedded log, the other runs the gateway (`imbus serve`) and the
//! router (`imbus route`) as separate processes on Kafka (Tansu, started by the test
//! harness). The switches are set through the environment of a restarted server.
//!
//! Needs `python3` with `slixmpp`, and for the Kafka test the Tansu binary (see
//! `tests/src/tansu.rs`).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, env_for, imbus, listener, require_slixmpp};

/// `offline.quota` of the servers under test (the quota scenario fills it).
const QUOTA: u32 = 25;
const DOMAIN: &str = "localhost";
/// How long the main run of the script may take before it is stopped.
const SUITE_TIMEOUT: Duration = Duration::from_secs(110);
/// The same for the runs with a switch off.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(45);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/slixmpp_im.py")
}

/// The accounts the scenarios use (names without the domain; password `Pw-<name>`).
fn accounts(scenarios: &[&str]) -> Vec<String> {
    let out = Command::new("python3")
        .arg(script())
        .arg("users")
        .args(scenarios)
        .output()
        .expect("run the script");
    assert!(
        out.status.success(),
        "listing the accounts: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Kills a child process on drop (a failed assertion must not leave one behind).
struct Reaped(Child);

impl Reaped {
    /// SIGTERM and wait: a router leaves its consumer group, so the next one gets the
    /// partitions at once.
    fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.0.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "imbus route did not stop within 60 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The server under test: `imbus serve` alone (embedded log) or with `imbus route`
/// (Kafka), all sharing one data directory and one base environment.
struct Deployment {
    dir: tempfile::TempDir,
    base_env: Vec<(&'static str, String)>,
    separate_router: bool,
    running: Option<(Server, Option<Reaped>)>,
}

impl Deployment {
    fn new(base_env: Vec<(&'static str, String)>, separate_router: bool) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            base_env,
            separate_router,
            running: None,
        }
    }

    fn env(&self, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
        let mut env = self.base_env.clone();
        env.push(("IMBUS_OFFLINE_QUOTA", QUOTA.to_string()));
        env.extend(extra.iter().cloned());
        env
    }

    /// Starts the processes with extra settings (stopping those already running).
    fn start(&mut self, extra: &[(&'static str, String)]) {
        self.stop();
        let env = self.env(extra);
        let server = Server::start_with(self.dir.path(), &env);
        let router = self.separate_router.then(|| {
            let mut cmd = imbus();
            env_for(&mut cmd, self.dir.path());
            for (k, v) in &env {
                cmd.env(k, v);
            }
            Reaped(
                cmd.arg("route")
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("spawn imbus route"),
            )
        });
        self.running = Some((server, router));
    }

    fn stop(&mut self) {
        if let Some((server, router)) = self.running.take() {
            if let Some(router) = router {
                router.terminate();
            }
            assert!(server.terminate().success(), "imbus serve stops cleanly");
        }
    }

    /// `imbus user add` for every account, a few at a time.
    fn add_accounts(&self, names: &[String]) {
        for batch in names.chunks(8) {
            let children: Vec<(String, Child)> = batch
                .iter()
                .map(|name| {
                    let mut cmd = imbus();
                    env_for(&mut cmd, self.dir.path());
                    for (k, v) in &self.env(&[]) {
                        cmd.env(k, v);
                    }
                    let child = cmd
                        .args([
                            "user",
                            "add",
                            &format!("{name}@{DOMAIN}"),
                            "--password",
                            &format!("Pw-{name}"),
                        ])
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped())
                        .spawn()
                        .expect("spawn imbus user add");
                    (name.clone(), child)
                })
                .collect();
            for (name, child) in children {
                let out = child.wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "imbus user add {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    /// Runs scenarios of the script, clients from source addresses 127.`net`.x.y.
    /// Returns whether all passed, and the script's output.
    fn run(&self, net: u8, scenarios: &[&str], timeout: Duration) -> (bool, String) {
        let c2s = listener(self.dir.path(), "c2s");
        let mut args: Vec<String> = vec![
            "--quota".into(),
            QUOTA.to_string(),
            "--net".into(),
            net.to_string(),
            c2s.ip().to_string(),
            c2s.port().to_string(),
            DOMAIN.into(),
        ];
        args.extend(scenarios.iter().map(|s| (*s).to_owned()));
        let run = common::run_script("slixmpp_im.py", &args, timeout);
        let (ok, text) = (run.ok, run.text());
        (ok, text)
    }
}

/// The whole suite on one deployment: the scenarios on a normal server, then `im-off` and
/// `presence-off` on the same data restarted with the switch off.
fn suite(mut deployment: Deployment, label: &str) {
    require_slixmpp();
    let started = Instant::now();
    deployment.start(&[]);
    deployment.add_accounts(&accounts(&["all", "im-off", "presence-off"]));
    let mut report = Vec::new();
    let mut ok = true;
    let mut phase = |name: &str, result: (bool, String), since: Instant| {
        ok &= result.0;
        report.push(format!(
            "== {label}: {name} ({:.1} s)\n{}",
            since.elapsed().as_secs_f64(),
            result.1.trim_end()
        ));
    };

    let t = Instant::now();
    phase(
        "all scenarios",
        deployment.run(1, &["all"], SUITE_TIMEOUT),
        t,
    );

    let t = Instant::now();
    deployment.start(&[("IMBUS_IM_ENABLED", "false".to_owned())]);
    phase(
        "im.enabled = false",
        deployment.run(2, &["im-off"], SWITCH_TIMEOUT),
        t,
    );

    let t = Instant::now();
    deployment.start(&[("IMBUS_PRESENCE_ENABLED", "false".to_owned())]);
    phase(
        "presence.enabled = false",
        deployment.run(3, &["presence-off"], SWITCH_TIMEOUT),
        t,
    );
    deployment.stop();

    let report = report.join("\n");
    assert!(ok, "router behaviour ({label}):\n{report}");
    eprintln!(
        "{report}\n{label}: all passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn router_behaviour_on_the_embedded_log() {
    suite(Deployment::new(Vec::new(), false), "embedded");
}

#[test]
fn router_behaviour_on_kafka_with_a_separate_router() {
    require_slixmpp();
    let broker = imbus_tests::tansu::TansuBroker::start().unwrap_or_else(|e| panic!("{e}"));
    let env = vec![
        ("IMBUS_BUS_BACKEND", "kafka".to_owned()),
        ("IMBUS_BUS_KAFKA_BOOTSTRAP", broker.bootstrap()),
        ("IMBUS_BUS_PARTITIONS", "2".to_owned()),
        ("IMBUS_ROUTER_EMBEDDED", "false".to_owned()),
    ];
    suite(Deployment::new(env, true), "kafka, separate router");
    drop(broker);
}
