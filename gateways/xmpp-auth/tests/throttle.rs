//! Login throttling with injected time.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use imbus_xmpp_auth::{Decision, Throttle, ThrottleConfig};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn config() -> ThrottleConfig {
    ThrottleConfig {
        free_failures: 3,
        base_delay: secs(1),
        max_delay: secs(60),
        forget_after: secs(600),
        address_burst: 1000,
        address_refill: secs(1),
        max_accounts: 100,
        max_addresses: 100,
    }
}

#[test]
fn account_backoff_grows_exponentially_up_to_the_cap() {
    let mut t = Throttle::new(config());
    let t0 = Instant::now();
    let addr = ip("192.0.2.1");
    for _ in 0..3 {
        assert_eq!(t.check(t0, "juliet", addr), Decision::Allow);
        t.record_failure(t0, "juliet", addr);
    }
    // Three failures: the next attempt waits 1 s.
    assert_eq!(t.check_account(t0, "juliet"), Decision::Wait(secs(1)));
    assert_eq!(
        t.check_account(t0 + Duration::from_millis(400), "juliet"),
        Decision::Wait(Duration::from_millis(600))
    );
    assert_eq!(t.check_account(t0 + secs(1), "juliet"), Decision::Allow);
    // Other accounts are not affected.
    assert_eq!(t.check_account(t0, "romeo"), Decision::Allow);

    let mut now = t0 + secs(1);
    let mut expected = Vec::new();
    for _ in 0..8 {
        t.record_failure(now, "juliet", addr);
        let Decision::Wait(wait) = t.check_account(now, "juliet") else {
            panic!("no back-off");
        };
        expected.push(wait.as_secs());
        now += wait;
        assert_eq!(t.check_account(now, "juliet"), Decision::Allow);
    }
    assert_eq!(expected, vec![2, 4, 8, 16, 32, 60, 60, 60]);
}

#[test]
fn success_clears_an_account_and_quiet_time_forgets_it() {
    let mut t = Throttle::new(config());
    let t0 = Instant::now();
    let addr = ip("192.0.2.1");
    for _ in 0..5 {
        t.record_failure(t0, "juliet", addr);
    }
    assert!(!t.check_account(t0, "juliet").is_allowed());
    t.record_success("juliet");
    assert_eq!(t.check_account(t0, "juliet"), Decision::Allow);
    // Failures count again from zero.
    t.record_failure(t0, "juliet", addr);
    assert_eq!(t.check_account(t0, "juliet"), Decision::Allow);

    for _ in 0..5 {
        t.record_failure(t0, "romeo", addr);
    }
    assert!(!t.check_account(t0 + secs(2), "romeo").is_allowed());
    // After forget_after without failures the history is gone: one new failure does not
    // bring the back-off back.
    let later = t0 + secs(600);
    assert_eq!(t.check_account(later, "romeo"), Decision::Allow);
    t.record_failure(later, "romeo", addr);
    assert_eq!(t.check_account(later, "romeo"), Decision::Allow);
}

#[test]
fn address_bucket_limits_password_spraying() {
    let mut t = Throttle::new(ThrottleConfig {
        address_burst: 5,
        address_refill: secs(10),
        ..config()
    });
    let t0 = Instant::now();
    let attacker = ip("198.51.100.7");
    // One failure each on many accounts: no account backs off, the address does.
    for i in 0..5 {
        assert_eq!(t.check_address(t0, attacker), Decision::Allow);
        t.record_failure(t0, &format!("user{i}"), attacker);
    }
    assert_eq!(t.check_address(t0, attacker), Decision::Wait(secs(10)));
    assert_eq!(
        t.check(t0 + secs(3), "user9", attacker),
        Decision::Wait(secs(7))
    );
    // Another address is not affected, nor is the IPv6 neighbour of a different /64.
    assert_eq!(t.check_address(t0, ip("198.51.100.8")), Decision::Allow);
    // One token back after 10 s, then empty again.
    assert_eq!(t.check_address(t0 + secs(10), attacker), Decision::Allow);
    t.record_address_failure(t0 + secs(10), attacker);
    assert_eq!(
        t.check_address(t0 + secs(12), attacker),
        Decision::Wait(secs(8))
    );
    // The whole burst is back after 50 s of quiet.
    let later = t0 + secs(70);
    for _ in 0..5 {
        assert_eq!(t.check_address(later, attacker), Decision::Allow);
        t.record_address_failure(later, attacker);
    }
    assert!(!t.check_address(later, attacker).is_allowed());
}

#[test]
fn ipv6_addresses_share_a_bucket_per_slash_64() {
    let mut t = Throttle::new(ThrottleConfig {
        address_burst: 2,
        ..config()
    });
    let t0 = Instant::now();
    t.record_address_failure(t0, ip("2001:db8:0:1::1"));
    t.record_address_failure(t0, ip("2001:db8:0:1::2"));
    assert!(!t.check_address(t0, ip("2001:db8:0:1:abcd::3")).is_allowed());
    assert!(t.check_address(t0, ip("2001:db8:0:2::1")).is_allowed());
}

#[test]
fn successes_do_not_use_up_an_address() {
    // Many users behind one NAT logging in after a restart.
    let mut t = Throttle::new(ThrottleConfig {
        address_burst: 2,
        ..config()
    });
    let t0 = Instant::now();
    let nat = ip("203.0.113.1");
    for i in 0..1000 {
        assert!(t.check(t0, &format!("user{i}"), nat).is_allowed());
        t.record_success(&format!("user{i}"));
    }
    assert_eq!(t.tracked_addresses(), 0);
}

#[test]
fn memory_is_bounded() {
    let mut t = Throttle::new(ThrottleConfig {
        max_accounts: 50,
        max_addresses: 20,
        ..config()
    });
    let t0 = Instant::now();
    // The account under attack keeps failing while many others fail once.
    for i in 0..10_000u32 {
        let now = t0 + Duration::from_millis(u64::from(i));
        let address = IpAddr::from([10, 0, (i >> 8) as u8, i as u8]);
        t.record_failure(now, &format!("user{i}"), address);
        if i % 10 == 0 {
            t.record_account_failure(now, "juliet");
        }
        assert!(t.tracked_accounts() <= 50);
        assert!(t.tracked_addresses() <= 20);
    }
    // The most recently failed account is still tracked and still backs off.
    assert!(!t.check_account(t0 + secs(10), "juliet").is_allowed());
    // Forgotten entries are dropped when new failures come in.
    let later = t0 + secs(10_000);
    t.record_failure(later, "last", ip("192.0.2.9"));
    assert_eq!(t.tracked_accounts(), 1);
    assert_eq!(t.tracked_addresses(), 1);
}

#[test]
fn times_before_the_last_failure_do_not_underflow() {
    let mut t = Throttle::new(config());
    let t0 = Instant::now() + secs(100);
    for _ in 0..5 {
        t.record_failure(t0, "juliet", ip("192.0.2.1"));
    }
    // A stale `now` (earlier than the last failure) waits at most the full delay.
    let Decision::Wait(wait) = t.check_account(t0 - secs(50), "juliet") else {
        panic!()
    };
    assert_eq!(wait, secs(4));
    let mut t = Throttle::new(ThrottleConfig {
        address_burst: 1,
        address_refill: secs(10),
        ..config()
    });
    t.record_address_failure(t0, ip("192.0.2.1"));
    assert_eq!(
        t.check_address(t0 - secs(50), ip("192.0.2.1")),
        Decision::Wait(secs(10))
    );
}
