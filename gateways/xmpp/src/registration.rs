//! In-Band Registration (XEP-0077): the account store the gateway hands account changes
//! to, and the per-address limit on new accounts.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imbus_xmpp_c2s::{AccountChange, AccountOutcome};
use parking_lot::Mutex;

/// The window of [`Registration::per_hour`].
const WINDOW: Duration = Duration::from_secs(3600);
/// How long an account change may take before the client is told it failed.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The future of an account change.
pub type AccountFuture = Pin<Box<dyn Future<Output = AccountOutcome> + Send + 'static>>;

/// Creates, changes and deletes accounts for clients (the server implements it on its
/// accounts, deriving SCRAM credentials from the password and storing only those).
pub trait AccountRegistrar: Send + Sync + fmt::Debug {
    /// Performs the change; the outcome is reported once the change is durable.
    fn change(&self, change: AccountChange) -> AccountFuture;
}

/// In-Band Registration for a gateway (see [`crate::Gateway::start_with_registration`]);
/// the sessions offer it when [`imbus_xmpp_c2s::SessionConfig::registration`] is on.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Where account changes go.
    pub registrar: Arc<dyn AccountRegistrar>,
    /// Accounts one IP address may try to create per hour; more attempts are refused
    /// with `resource-constraint`.
    pub per_hour: u32,
}

/// The registration side of a gateway: the registrar (if any) and the attempts per
/// address in the current window.
#[derive(Debug, Default)]
pub(crate) struct Registrations {
    registration: Option<Registration>,
    attempts: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Registrations {
    pub(crate) fn new(registration: Option<Registration>) -> Self {
        Self {
            registration,
            attempts: Mutex::default(),
        }
    }

    /// Counts an attempt to create an account from `ip`; `false` when the address made
    /// too many in the current window.
    fn admit(&self, now: Instant, ip: IpAddr, per_hour: u32) -> bool {
        let mut attempts = self.attempts.lock();
        if attempts.len() > 10_000 {
            attempts.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let entry = attempts.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        if entry.1 >= per_hour {
            return false;
        }
        entry.1 += 1;
        true
    }

    /// Performs an account change a client at `ip` asked for.
    pub(crate) async fn perform(&self, ip: IpAddr, change: AccountChange) -> AccountOutcome {
        let Some(registration) = &self.registration else {
            return AccountOutcome::NotAllowed;
        };
        let (what, account) = match &change {
            AccountChange::Create { jid, .. } => ("create", jid.as_str().to_owned()),
            AccountChange::ChangePassword { jid, .. } => ("password", jid.as_str().to_owned()),
            AccountChange::Remove { jid } => ("remove", jid.as_str().to_owned()),
        };
        if matches!(change, AccountChange::Create { .. })
            && !self.admit(Instant::now(), ip, registration.per_hour)
        {
            tracing::info!(%ip, account, "registration refused: too many from this address");
            return AccountOutcome::RateLimited;
        }
        let outcome =
            match tokio::time::timeout(CHANGE_TIMEOUT, registration.registrar.change(change)).await
            {
                Ok(outcome) => outcome,
                Err(_) => {
                    tracing::warn!(%ip, account, what, "account change timed out");
                    AccountOutcome::Failed
                }
            };
        tracing::info!(%ip, account, what, ?outcome, "in-band account change");
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_limited_per_address_and_window() {
        let registrations = Registrations::default();
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let now = Instant::now();
        assert!(registrations.admit(now, a, 2));
        assert!(registrations.admit(now, a, 2));
        assert!(!registrations.admit(now, a, 2));
        assert!(registrations.admit(now, b, 2));
        assert!(registrations.admit(now + WINDOW, a, 2));
    }
}
