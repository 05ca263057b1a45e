//! Login throttling: exponential back-off per account, a token bucket per client address.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

/// Throttling settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failed logins an account may have before attempts are delayed.
    pub free_failures: u32,
    /// The delay after `free_failures` failures; it doubles with every further failure.
    pub base_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// An account's failures are forgotten after this long without a new one.
    pub forget_after: Duration,
    /// Failed logins an address may have in a burst (values below 1 count as 1).
    pub address_burst: u32,
    /// An address earns back one failed login per this interval.
    pub address_refill: Duration,
    /// The most accounts tracked; the least recently failed are forgotten first.
    pub max_accounts: usize,
    /// The most addresses tracked; the least recently failed are forgotten first.
    pub max_addresses: usize,
}

impl Default for ThrottleConfig {
    /// Five free failures per account, then 1 s doubling up to 5 min, forgotten after an
    /// hour; 30 failures per address in a burst, one more every 10 s; 100 000 accounts and
    /// addresses tracked (a few MiB at most).
    fn default() -> Self {
        Self {
            free_failures: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            forget_after: Duration::from_secs(3600),
            address_burst: 30,
            address_refill: Duration::from_secs(10),
            max_accounts: 100_000,
            max_addresses: 100_000,
        }
    }
}

/// Whether a login attempt may go ahead now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refuse the attempt (e.g. with `temporary-auth-failure`); it would be allowed after
    /// this long.
    Wait(Duration),
}

impl Decision {
    /// Whether the attempt is allowed.
    pub fn is_allowed(self) -> bool {
        self == Decision::Allow
    }

    /// The longer wait of two decisions.
    pub fn max(self, other: Decision) -> Decision {
        match (self, other) {
            (Decision::Allow, d) | (d, Decision::Allow) => d,
            (Decision::Wait(a), Decision::Wait(b)) => Decision::Wait(a.max(b)),
        }
    }
}

/// The key of a client address: an IPv4 address, or the /64 prefix of an IPv6 address
/// (one subscriber usually holds a whole /64). IPv4-mapped IPv6 addresses count as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AddressKey {
    V4(u32),
    V6(u64),
}

impl From<IpAddr> for AddressKey {
    fn from(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => AddressKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey::V4(u32::from(v4)),
                None => AddressKey::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct AccountEntry {
    failures: u32,
    last_failure: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    /// When `tokens` was last brought up to date.
    updated: Instant,
}

/// Login throttling without I/O or clock reads: the caller passes the current time.
///
/// Two independent limits apply:
///
/// - **per account**, exponential back-off: after [`ThrottleConfig::free_failures`]
///   consecutive failed logins, the next attempt must wait
///   [`ThrottleConfig::base_delay`], doubling with every further failure up to
///   [`ThrottleConfig::max_delay`]. A success clears the account; failures are forgotten
///   after [`ThrottleConfig::forget_after`] without a new one. Unknown user names are
///   tracked like real ones, so throttling reveals nothing about which accounts exist.
/// - **per client address**, a token bucket of failures: an address may fail
///   [`ThrottleConfig::address_burst`] times in a burst and earns one failure back every
///   [`ThrottleConfig::address_refill`]. Only failures count, so many users behind one
///   NAT can all log in after a server restart.
///
/// Memory is bounded: at most [`ThrottleConfig::max_accounts`] accounts and
/// [`ThrottleConfig::max_addresses`] addresses are tracked; entries that no longer
/// restrict anything are dropped, and when a table is full the entry least recently
/// failed is forgotten.
///
/// Typical use in a gateway: [`Throttle::check_address`] when `<auth/>` arrives,
/// [`Throttle::check_account`] when the exchange names the user, refuse with
/// `temporary-auth-failure` on [`Decision::Wait`], and report the outcome with
/// [`Throttle::record_failure`] or [`Throttle::record_success`].
#[derive(Debug)]
pub struct Throttle {
    config: ThrottleConfig,
    accounts: LruCache<String, AccountEntry>,
    addresses: LruCache<AddressKey, Bucket>,
}

impl Throttle {
    /// A throttle with no history.
    pub fn new(config: ThrottleConfig) -> Self {
        let cap = |n: usize| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        Self {
            config,
            accounts: LruCache::new(cap(config.max_accounts)),
            addresses: LruCache::new(cap(config.max_addresses)),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    /// Whether an attempt for `account` may go ahead at `now`.
    pub fn check_account(&self, now: Instant, account: &str) -> Decision {
        match self.accounts.peek(account) {
            Some(entry) => self.account_decision(now, entry),
            None => Decision::Allow,
        }
    }

    /// Whether an attempt from `address` may go ahead at `now`.
    pub fn check_address(&self, now: Instant, address: IpAddr) -> Decision {
        let Some(bucket) = self.addresses.peek(&AddressKey::from(address)) else {
            return Decision::Allow;
        };
        let bucket = self.refilled(now, *bucket);
        if bucket.tokens > 0 {
            return Decision::Allow;
        }
        let ready = bucket
            .updated
            .checked_add(self.config.address_refill)
            .unwrap_or(now);
        wait_until(now, ready, self.config.address_refill)
    }

    /// Both checks: the longer wait wins.
    pub fn check(&self, now: Instant, account: &str, address: IpAddr) -> Decision {
        self.check_account(now, account)
            .max(self.check_address(now, address))
    }

    /// A login for `account` from `address` failed at `now`.
    pub fn record_failure(&mut self, now: Instant, account: &str, address: IpAddr) {
        self.record_account_failure(now, account);
        self.record_address_failure(now, address);
    }

    /// A login for `account` succeeded: the account's failures are cleared. The address
    /// keeps its history: a success does not pay for failures.
    pub fn record_success(&mut self, account: &str) {
        self.accounts.pop(account);
    }

    /// A failure for an account only (e.g. when the address is not known).
    pub fn record_account_failure(&mut self, now: Instant, account: &str) {
        self.forget_expired_accounts(now);
        let failures = match self.accounts.peek(account) {
            Some(entry) if !self.is_forgotten(now, entry) => entry.failures.saturating_add(1),
            _ => 1,
        };
        let entry = AccountEntry {
            failures,
            last_failure: now,
        };
        self.accounts.push(account.to_owned(), entry);
    }

    /// A failure from an address only (e.g. a malformed exchange that named no account).
    pub fn record_address_failure(&mut self, now: Instant, address: IpAddr) {
        self.forget_full_buckets(now);
        let key = AddressKey::from(address);
        let bucket = match self.addresses.peek(&key).copied() {
            Some(bucket) => self.refilled(now, bucket),
            None => Bucket {
                tokens: self.burst(),
                updated: now,
            },
        };
        let bucket = Bucket {
            tokens: bucket.tokens.saturating_sub(1),
            updated: bucket.updated,
        };
        self.addresses.push(key, bucket);
    }

    /// How many accounts are tracked.
    pub fn tracked_accounts(&self) -> usize {
        self.accounts.len()
    }

    /// How many addresses are tracked.
    pub fn tracked_addresses(&self) -> usize {
        self.addresses.len()
    }

    fn burst(&self) -> u32 {
        self.config.address_burst.max(1)
    }

    fn is_forgotten(&self, now: Instant, entry: &AccountEntry) -> bool {
        now.saturating_duration_since(entry.last_failure) >= self.config.forget_after
    }

    fn account_decision(&self, now: Instant, entry: &AccountEntry) -> Decision {
        if self.is_forgotten(now, entry) || entry.failures < self.config.free_failures {
            return Decision::Allow;
        }
        let doublings = entry.failures - self.config.free_failures;
        let factor = 1u32.checked_shl(doublings).unwrap_or(u32::MAX);
        let delay = self
            .config
            .base_delay
            .saturating_mul(factor)
            .min(self.config.max_delay);
        match entry.last_failure.checked_add(delay) {
            Some(ready) => wait_until(now, ready, delay),
            None => Decision::Wait(delay),
        }
    }

    /// The bucket with the tokens earned since it was last updated.
    fn refilled(&self, now: Instant, bucket: Bucket) -> Bucket {
        let burst = self.burst();
        let refill = self.config.address_refill;
        let elapsed = now.saturating_duration_since(bucket.updated);
        if refill.is_zero() {
            return Bucket {
                tokens: burst,
                updated: now,
            };
        }
        let earned = elapsed.as_nanos() / refill.as_nanos();
        let tokens = u128::from(bucket.tokens).saturating_add(earned);
        if tokens >= u128::from(burst) {
            return Bucket {
                tokens: burst,
                updated: now,
            };
        }
        // `earned` < burst ≤ u32::MAX here.
        let earned = u32::try_from(earned).unwrap_or(u32::MAX);
        Bucket {
            tokens: u32::try_from(tokens).unwrap_or(burst),
            updated: bucket
                .updated
                .checked_add(refill.saturating_mul(earned))
                .unwrap_or(now),
        }
    }

    /// Drops least recently failed accounts whose failures are forgotten.
    fn forget_expired_accounts(&mut self, now: Instant) {
        while let Some((_, entry)) = self.accounts.peek_lru() {
            if !self.is_forgotten(now, entry) {
                break;
            }
            self.accounts.pop_lru();
        }
    }

    /// Drops least recently failed addresses whose bucket is full again.
    fn forget_full_buckets(&mut self, now: Instant) {
        while let Some((_, bucket)) = self.addresses.peek_lru() {
            if self.refilled(now, *bucket).tokens < self.burst() {
                break;
            }
            self.addresses.pop_lru();
        }
    }
}

/// Allowed from `ready` on; a `now` older than the event that set `ready` (a stale time
/// from the caller) waits at most `longest`.
fn wait_until(now: Instant, ready: Instant, longest: Duration) -> Decision {
    if now >= ready {
        Decision::Allow
    } else {
        Decision::Wait((ready - now).min(longest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn ipv6_addresses_are_keyed_by_prefix() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(AddressKey::from(a), AddressKey::from(b));
        assert_ne!(AddressKey::from(a), AddressKey::from(c));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(
            AddressKey::from(mapped),
            AddressKey::from(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))
        );
        assert_ne!(
            AddressKey::from(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            AddressKey::from(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
    }

    #[test]
    fn decisions_combine_to_the_longer_wait() {
        use Decision::*;
        assert_eq!(Allow.max(Allow), Allow);
        assert_eq!(Allow.max(Wait(secs(2))), Wait(secs(2)));
        assert_eq!(Wait(secs(3)).max(Wait(secs(2))), Wait(secs(3)));
        assert!(!Wait(secs(1)).is_allowed());
    }

    #[test]
    fn refill_keeps_the_remainder() {
        let config = ThrottleConfig {
            address_burst: 5,
            address_refill: secs(10),
            ..ThrottleConfig::default()
        };
        let throttle = Throttle::new(config);
        let t0 = Instant::now();
        let bucket = Bucket {
            tokens: 0,
            updated: t0,
        };
        let later = throttle.refilled(t0 + secs(25), bucket);
        assert_eq!(later.tokens, 2);
        assert_eq!(later.updated, t0 + secs(20));
        let full = throttle.refilled(t0 + secs(1000), bucket);
        assert_eq!(full.tokens, 5);
        assert_eq!(full.updated, t0 + secs(1000));
    }
}
