//! User accounts: events on the compacted `accounts` topic (key: the user's bare JID),
//! holding SCRAM-SHA-1 and SCRAM-SHA-256 credentials only, never a password.
//!
//! [`AccountsView`] is the fold of that topic (last event per user wins, `Deleted` removes
//! the user). The admin API and the command line change accounts through [`Accounts`],
//! which checks the change against the view, appends the event, and waits until the view
//! has applied it, so a change is visible to the next request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use imbus_config::Config;
use imbus_config::topics::ACCOUNTS;
use imbus_core::{AccountDeleted, AccountEvent, AccountState, BareJid, Event, Timestamp};
use imbus_log::{ConsumedRecord, Log, Partition, Record, StartAt};
use parking_lot::RwLock;
use tokio::sync::{Mutex, watch};

/// Why an account change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{jid:?} is not a valid user address (expected user@{domain}): {reason}")]
    InvalidJid {
        jid: String,
        domain: String,
        reason: String,
    },
    #[error("{jid} is not on this server's domain {domain}")]
    WrongDomain { jid: String, domain: String },
    #[error("the account {0} already exists")]
    Exists(String),
    #[error("there is no account {0}")]
    NotFound(String),
    #[error("password refused: {0}")]
    Password(String),
    #[error("the log did not accept the change: {0}")]
    Log(String),
}

/// One account as the view holds it.
#[derive(Debug, Clone)]
pub struct Account {
    pub state: AccountState,
    /// When the account was created (the first `Created` seen).
    pub created: Timestamp,
}

#[derive(Debug, Default)]
struct ViewState {
    accounts: BTreeMap<String, Account>,
}

/// The fold of the `accounts` topic.
#[derive(Debug, Clone)]
pub struct AccountsView {
    state: Arc<RwLock<ViewState>>,
    /// The next offset to apply, per partition; advances as the followers apply records.
    progress: watch::Sender<Vec<i64>>,
}

impl AccountsView {
    fn new(partitions: usize) -> Self {
        Self {
            state: Arc::default(),
            progress: watch::Sender::new(vec![0; partitions]),
        }
    }

    fn apply(&self, record: &ConsumedRecord) {
        let Some(value) = record.value.as_ref() else {
            if let Some(key) = record.key.as_ref() {
                self.state
                    .write()
                    .accounts
                    .remove(String::from_utf8_lossy(key).as_ref());
            }
            return;
        };
        let event = match imbus_schemas::decode(value) {
            Ok(Event::Account(e)) => e,
            Ok(_) => {
                tracing::warn!(
                    partition = record.partition,
                    offset = record.offset,
                    "ignoring a non-account event on the accounts topic"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(partition = record.partition, offset = record.offset, error = %e, "ignoring an undecodable record on the accounts topic");
                return;
            }
        };
        let mut state = self.state.write();
        match event {
            AccountEvent::Created(s) => {
                let created = s.at;
                state
                    .accounts
                    .insert(s.jid.to_string(), Account { state: s, created });
            }
            AccountEvent::Changed(s) => {
                let key = s.jid.to_string();
                let created = state.accounts.get(&key).map_or(s.at, |a| a.created);
                state.accounts.insert(key, Account { state: s, created });
            }
            AccountEvent::Deleted(d) => {
                state.accounts.remove(d.jid.to_string().as_str());
            }
        }
    }

    /// The account of a user.
    pub fn get(&self, jid: &str) -> Option<Account> {
        self.state.read().accounts.get(jid).cloned()
    }

    /// Every account, by address.
    pub fn list(&self) -> Vec<Account> {
        self.state.read().accounts.values().cloned().collect()
    }

    /// Waits until the view has applied the record at `offset` of `partition`.
    async fn caught_up(&self, partition: Partition, offset: i64) {
        let mut rx = self.progress.subscribe();
        let index = usize::try_from(partition).unwrap_or(usize::MAX);
        let _ = rx
            .wait_for(|p| p.get(index).is_none_or(|next| *next > offset))
            .await;
    }
}

/// Reads the whole `accounts` topic now and returns the view and the offsets to follow from.
pub async fn load(log: &dyn Log) -> anyhow::Result<(AccountsView, Vec<i64>)> {
    let partitions = log
        .partition_count(ACCOUNTS)
        .await
        .context("cannot read the accounts topic")?;
    let view = AccountsView::new(usize::try_from(partitions).unwrap_or(0));
    let mut next = Vec::new();
    for p in 0..partitions {
        let high = log.watermarks(ACCOUNTS, p).await?.high;
        let mut reader = log.reader(ACCOUNTS, p, StartAt::Earliest).await?;
        while reader.position() < high {
            let batch = reader.read(1024, Duration::from_secs(5)).await?;
            if batch.is_empty() {
                break;
            }
            for r in &batch {
                view.apply(r);
            }
        }
        next.push(reader.position());
    }
    view.progress.send_replace(next.clone());
    Ok((view, next))
}

/// Keeps the view current: one follower per partition, until `shutdown` flips.
pub fn follow(
    log: Arc<dyn Log>,
    view: AccountsView,
    from: Vec<i64>,
    shutdown: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    from.into_iter()
        .enumerate()
        .map(|(index, offset)| {
            let (log, view, mut shutdown) = (log.clone(), view.clone(), shutdown.clone());
            tokio::spawn(async move {
                let partition = Partition::try_from(index).unwrap_or(Partition::MAX);
                let mut reader = match log.reader(ACCOUNTS, partition, StartAt::Offset(offset)).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(partition, error = %e, "cannot follow the accounts topic");
                        return;
                    }
                };
                loop {
                    let batch = tokio::select! {
                        _ = shutdown.changed() => return,
                        b = reader.read(512, Duration::from_secs(30)) => b,
                    };
                    match batch {
                        Ok(batch) => {
                            for r in &batch {
                                view.apply(r);
                            }
                            let next = reader.position();
                            view.progress.send_modify(|p| {
                                if let Some(slot) = p.get_mut(index) {
                                    *slot = next;
                                }
                            });
                        }
                        Err(e) => {
                            tracing::error!(partition, error = %e, "reading the accounts topic failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            })
        })
        .collect()
}

/// Account administration against the log.
#[derive(Debug, Clone)]
pub struct Accounts {
    log: Arc<dyn Log>,
    view: AccountsView,
    domain: String,
    /// One change at a time, so "exists?" and "append" cannot interleave.
    lock: Arc<Mutex<()>>,
}

impl Accounts {
    pub fn new(log: Arc<dyn Log>, view: AccountsView, config: &Config) -> Self {
        Self {
            log,
            view,
            domain: config.domain.clone(),
            lock: Arc::default(),
        }
    }

    pub fn view(&self) -> &AccountsView {
        &self.view
    }

    /// Parses a user address of this server's domain.
    pub fn parse_jid(&self, jid: &str) -> Result<BareJid, AccountError> {
        let invalid = |reason: String| AccountError::InvalidJid {
            jid: jid.to_owned(),
            domain: self.domain.clone(),
            reason,
        };
        let bare = BareJid::new(jid).map_err(|e| invalid(e.to_string()))?;
        if bare.node().is_none() {
            return Err(invalid("the address has no user part".to_owned()));
        }
        if bare.domain().as_str() != self.domain {
            return Err(AccountError::WrongDomain {
                jid: bare.to_string(),
                domain: self.domain.clone(),
            });
        }
        Ok(bare)
    }

    async fn append(&self, jid: &BareJid, event: AccountEvent) -> Result<(), AccountError> {
        let bytes = imbus_schemas::encode(&Event::Account(event))
            .map_err(|e| AccountError::Log(e.to_string()))?;
        let record = Record::new(Bytes::from(jid.to_string()), Bytes::from(bytes));
        let pos = self
            .log
            .append(ACCOUNTS, record)
            .await
            .map_err(|e| AccountError::Log(e.to_string()))?;
        self.view.caught_up(pos.partition, pos.offset).await;
        Ok(())
    }

    /// Derives SCRAM credentials off the async workers (PBKDF2 is deliberately slow).
    async fn credentials(
        password: String,
        iterations: u32,
    ) -> Result<imbus_core::Credentials, AccountError> {
        tokio::task::spawn_blocking(move || {
            imbus_xmpp_auth::derive(&password, iterations, &mut rand::rng())
                .map_err(|e| AccountError::Password(e.to_string()))
        })
        .await
        .map_err(|e| AccountError::Password(e.to_string()))?
    }

    /// Creates an account.
    pub async fn add(
        &self,
        jid: &str,
        password: &str,
        iterations: u32,
        by: &str,
    ) -> Result<BareJid, AccountError> {
        self.set_password(jid, password, iterations, by, false)
            .await
    }

    /// Changes an account's password.
    pub async fn passwd(
        &self,
        jid: &str,
        password: &str,
        iterations: u32,
        by: &str,
    ) -> Result<BareJid, AccountError> {
        self.set_password(jid, password, iterations, by, true).await
    }

    /// Stores new credentials: for an existing account (`existing`) or a new one.
    async fn set_password(
        &self,
        jid: &str,
        password: &str,
        iterations: u32,
        by: &str,
        existing: bool,
    ) -> Result<BareJid, AccountError> {
        let jid = self.parse_jid(jid)?;
        let _guard = self.lock.lock().await;
        match (existing, self.view.get(&jid.to_string()).is_some()) {
            (false, true) => return Err(AccountError::Exists(jid.to_string())),
            (true, false) => return Err(AccountError::NotFound(jid.to_string())),
            _ => {}
        }
        let credentials = Self::credentials(password.to_owned(), iterations).await?;
        let state = AccountState {
            jid: jid.clone(),
            credentials,
            at: Timestamp::now(),
            by: by.to_owned(),
        };
        let event = if existing {
            AccountEvent::Changed(state)
        } else {
            AccountEvent::Created(state)
        };
        self.append(&jid, event).await?;
        Ok(jid)
    }

    /// Deletes an account.
    pub async fn delete(&self, jid: &str, by: &str) -> Result<BareJid, AccountError> {
        let jid = self.parse_jid(jid)?;
        let _guard = self.lock.lock().await;
        if self.view.get(&jid.to_string()).is_none() {
            return Err(AccountError::NotFound(jid.to_string()));
        }
        let deleted = AccountDeleted {
            jid: jid.clone(),
            at: Timestamp::now(),
            by: by.to_owned(),
        };
        self.append(&jid, AccountEvent::Deleted(deleted)).await?;
        Ok(jid)
    }
}
