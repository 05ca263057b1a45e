//! The XMPP client gateway of `imbus serve`: its settings from the configuration, the
//! server secret, the accounts view as its credential lookup, and the accounts as the
//! registrar of In-Band Registration.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use imbus_config::{Config, ResourceConflict};
use imbus_core::jid::DomainPart;
use imbus_core::{Credentials, GatewayId};
use imbus_gateway_xmpp::{
    AccountFuture, AccountRegistrar, CertSource, ConnectionLimits, CredentialLookup, GatewayConfig,
    Registration,
};
use imbus_xmpp_auth::{AuthConfig, MIN_SECRET_LEN, ServerSecret};
use imbus_xmpp_c2s::{AccountChange, AccountOutcome, ConflictPolicy, SessionConfig};
use rand::RngCore;

use crate::accounts::{AccountError, Accounts, AccountsView};

/// The file holding the server secret, in the data directory.
const SECRET_FILE: &str = "auth.secret";

impl CredentialLookup for AccountsView {
    fn lookup(&self, bare_jid: &str) -> Option<Credentials> {
        self.get(bare_jid).map(|account| account.state.credentials)
    }
}

/// Who account changes made by clients themselves are recorded as made by.
const REGISTRATION_BY: &str = "in-band registration";

/// In-Band Registration against the accounts: credentials are derived from the password
/// (with `auth.scram_iterations`) and only they are stored.
#[derive(Debug, Clone)]
pub struct Registrar {
    accounts: Accounts,
    iterations: u32,
}

impl AccountRegistrar for Registrar {
    fn change(&self, change: AccountChange) -> AccountFuture {
        let registrar = self.clone();
        Box::pin(async move {
            let accounts = &registrar.accounts;
            let iterations = registrar.iterations;
            let result = match change {
                AccountChange::Create { jid, password } => {
                    accounts
                        .add(jid.as_str(), password.as_str(), iterations, REGISTRATION_BY)
                        .await
                }
                AccountChange::ChangePassword { jid, password } => {
                    accounts
                        .passwd(jid.as_str(), password.as_str(), iterations, REGISTRATION_BY)
                        .await
                }
                AccountChange::Remove { jid } => {
                    accounts.delete(jid.as_str(), REGISTRATION_BY).await
                }
            };
            match result {
                Ok(_) => AccountOutcome::Done,
                Err(AccountError::Exists(_)) => AccountOutcome::Exists,
                Err(AccountError::NotFound(_)) => AccountOutcome::NotFound,
                Err(
                    e @ (AccountError::InvalidJid { .. }
                    | AccountError::WrongDomain { .. }
                    | AccountError::Password(_)),
                ) => AccountOutcome::NotAcceptable(e.to_string()),
                Err(e @ AccountError::Log(_)) => {
                    tracing::error!(error = %e, "an in-band account change was not stored");
                    AccountOutcome::Failed
                }
            }
        })
    }
}

/// The gateway's In-Band Registration, when `c2s.registration` is on.
pub fn registration(config: &Config, accounts: &Accounts) -> Option<Registration> {
    config.c2s.registration.then(|| Registration {
        registrar: Arc::new(Registrar {
            accounts: accounts.clone(),
            iterations: config.scram_iterations,
        }),
        per_hour: config.c2s.registration_per_hour,
    })
}

/// This node's gateway id: `gw<node_id>` (its delivery topic is `deliver.gw<node_id>`).
pub fn gateway_id(config: &Config) -> anyhow::Result<GatewayId> {
    GatewayId::new(format!("gw{}", config.node_id))
        .with_context(|| format!("node_id {} makes no valid gateway id", config.node_id))
}

/// The gateway's settings.
pub fn gateway_config(config: &Config) -> anyhow::Result<GatewayConfig> {
    let secret = server_secret(&config.data_dir)?;
    let auth = AuthConfig::new(secret, config.scram_iterations)
        .context("auth.scram_iterations for unknown users")?;
    let domain = DomainPart::new(config.domain.as_str())
        .with_context(|| format!("domain {:?} is not a valid XMPP domain", config.domain))?
        .into_owned();
    let c2s = &config.c2s;
    let mut session = SessionConfig::new(domain, auth);
    session.require_tls = c2s.require_tls;
    session.max_stanza_bytes = c2s.max_stanza_bytes;
    session.auth_timeout = c2s.auth_timeout;
    session.resource_conflict = match c2s.resource_conflict {
        ResourceConflict::Replace => ConflictPolicy::Replace,
        ResourceConflict::Refuse => ConflictPolicy::Refuse,
    };
    session.sm_resume_timeout = c2s.sm_resume_timeout;
    session.registration = c2s.registration;
    let cert = match &c2s.tls_files {
        Some((cert, key)) => CertSource::Pem {
            cert: cert.clone(),
            key: key.clone(),
        },
        None => {
            let dir = config.data_dir.join("tls");
            tracing::info!(
                dir = %dir.display(),
                "TLS: using the self-signed certificate of this data directory (generated on \
                 first start; set tls.cert_file and tls.key_file for a trusted one)"
            );
            CertSource::SelfSigned { dir }
        }
    };
    Ok(GatewayConfig {
        gateway_id: gateway_id(config)?,
        domain: config.domain.clone(),
        c2s_addr: Some((config.bind, config.c2s_port).into()),
        tls_addr: Some((config.bind, config.c2s_tls_port).into()),
        cert,
        session: Arc::new(session),
        limits: ConnectionLimits::default(),
    })
}

/// The secret behind the stand-in SCRAM salts of unknown users: generated once into
/// `data_dir/auth.secret` (mode 0600, hex) and reused, so an unknown user gets the same
/// salt on every attempt and across restarts.
pub fn server_secret(data_dir: &Path) -> anyhow::Result<ServerSecret> {
    let path = data_dir.join(SECRET_FILE);
    if let Some(secret) = read_secret(&path)? {
        return Ok(secret);
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write the server secret {}", path.display()))?;
            tracing::info!(file = %path.display(), "generated the server secret");
            ServerSecret::new(bytes.to_vec()).context("generated server secret")
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_secret(&path)?
            .with_context(|| format!("the server secret {} is empty", path.display())),
        Err(e) => {
            Err(e).with_context(|| format!("cannot create the server secret {}", path.display()))
        }
    }
}

fn read_secret(path: &PathBuf) -> anyhow::Result<Option<ServerSecret>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read the server secret {}", path.display()));
        }
    };
    let text = text.trim();
    let bytes = decode_hex(text).with_context(|| {
        format!(
            "the server secret {} is not hexadecimal; delete it to generate a new one \
             (unknown users' stand-in salts change then)",
            path.display()
        )
    })?;
    ServerSecret::new(bytes).map(Some).with_context(|| {
        format!(
            "the server secret {} must hold at least {MIN_SECRET_LEN} bytes",
            path.display()
        )
    })
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_server_secret_is_generated_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = server_secret(dir.path()).unwrap();
        let second = server_secret(dir.path()).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.as_bytes().len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(SECRET_FILE), "zz").unwrap();
        let e = server_secret(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("auth.secret") && e.contains("hexadecimal"),
            "{e}"
        );
        std::fs::write(dir.path().join(SECRET_FILE), "00ff").unwrap();
        let e = format!("{:#}", server_secret(dir.path()).unwrap_err());
        assert!(e.contains("at least"), "{e}");
    }

    #[test]
    fn settings_become_the_gateway_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::load(
            None,
            [
                ("IMBUS_DATA_DIR", dir.path().to_str().unwrap()),
                ("IMBUS_NODE_ID", "7"),
                ("IMBUS_C2S_RESOURCE_CONFLICT", "refuse"),
                ("IMBUS_C2S_AUTH_TIMEOUT", "5s"),
                ("IMBUS_SM_RESUME_TIMEOUT", "1m"),
            ],
        )
        .unwrap();
        let gateway = gateway_config(&config).unwrap();
        assert_eq!(gateway.gateway_id.as_str(), "gw7");
        assert_eq!(
            gateway.cert,
            CertSource::SelfSigned {
                dir: dir.path().join("tls")
            }
        );
        assert_eq!(gateway.session.resource_conflict, ConflictPolicy::Refuse);
        assert_eq!(gateway.session.auth_timeout.as_secs(), 5);
        assert_eq!(gateway.session.sm_resume_timeout.as_secs(), 60);
        assert_eq!(gateway.session.max_stanza_bytes, 262_144);
        assert!(gateway.session.require_tls);
        assert!(!gateway.session.registration);
        assert_eq!(gateway.c2s_addr.unwrap().port(), 5222);
        assert_eq!(gateway.tls_addr.unwrap().port(), 5223);
    }
}
