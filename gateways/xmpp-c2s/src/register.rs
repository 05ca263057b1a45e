//! In-Band Registration (XEP-0077): the requests a session hands to the gateway and the
//! answers it gets back.
//!
//! Before authentication a client may create an account (`jabber:iq:register` get for
//! the form, set with `<username/>` and `<password/>`); once bound it may change its
//! password (§3.3) or cancel its account (§3.2, `<remove/>`; the stream then ends with
//! `not-authorized`). The session validates the request (the user name must be a valid
//! localpart after nodeprep, the password long enough) and emits
//! [`crate::Action::ChangeAccount`]; the gateway performs it (applying its per-address
//! limit to new accounts) and feeds [`crate::Input::AccountChanged`].

use std::fmt;

use imbus_core::jid::{BareJid, DomainPart, NodePart};

/// The namespace of registration requests.
pub const NS_REGISTER: &str = "jabber:iq:register";
/// The namespace of the stream feature advertising registration.
pub const NS_REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";

/// A password on its way to the account store, which derives credentials from it and
/// forgets it. Its `Debug` output does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// The password.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<hidden>)")
    }
}

/// A change to an account asked for by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountChange {
    /// Create this account (the client is not authenticated). The gateway applies its
    /// per-address registration limit first.
    Create {
        /// The new account, its localpart normalized.
        jid: BareJid,
        /// Its password.
        password: Password,
    },
    /// Set a new password for the authenticated user's account.
    ChangePassword {
        /// The authenticated user.
        jid: BareJid,
        /// The new password.
        password: Password,
    },
    /// Delete the authenticated user's account.
    Remove {
        /// The authenticated user.
        jid: BareJid,
    },
}

/// How an [`AccountChange`] ended, fed back with [`crate::Input::AccountChanged`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountOutcome {
    /// Done (and durable).
    Done,
    /// The account to create exists already: `conflict`.
    Exists,
    /// The account to change or remove does not exist (any more): `item-not-found`.
    NotFound,
    /// The account store refused the user name or password: `not-acceptable` with this
    /// text.
    NotAcceptable(String),
    /// This address created too many accounts recently: `resource-constraint`.
    RateLimited,
    /// This gateway does not change accounts: `not-allowed`.
    NotAllowed,
    /// The change could not be stored: `internal-server-error`.
    Failed,
}

/// Why a registration request was refused before reaching the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Invalid {
    MissingFields,
    Username,
    Password,
}

/// The account of `username` on `domain`, its localpart normalized (nodeprep).
pub(crate) fn account_jid(username: &str, domain: &DomainPart) -> Result<BareJid, Invalid> {
    if username.is_empty() || username.trim() != username {
        return Err(Invalid::Username);
    }
    let node = NodePart::new(username).map_err(|_| Invalid::Username)?;
    Ok(BareJid::from_parts(Some(&node), domain))
}

/// Checks a password's length in characters.
pub(crate) fn check_password(password: &str, min_chars: usize) -> Result<(), Invalid> {
    if password.chars().count() < min_chars.max(1) {
        Err(Invalid::Password)
    } else {
        Ok(())
    }
}
