//! The server side of PLAIN (RFC 4616), checked against SCRAM credentials.

use std::fmt;

use imbus_core::{BareJid, Credentials, ScramHash};

use crate::condition::{Failure, SaslCondition};
use crate::credentials::{saslprep, verify_keys};
use crate::mechanism::Mechanism;
use crate::server::{Authenticated, Context, Step};

/// The hash whose credentials PLAIN passwords are checked against.
const PLAIN_HASH: ScramHash = ScramHash::Sha256;

#[derive(Debug)]
pub(crate) struct PlainExchange {
    state: State,
}

enum State {
    AwaitingMessage,
    AwaitingCredentials { jid: BareJid, password: String },
    Done,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::AwaitingMessage => f.write_str("AwaitingMessage"),
            State::AwaitingCredentials { jid, .. } => f
                .debug_struct("AwaitingCredentials")
                .field("jid", jid)
                .field("password", &"<redacted>")
                .finish(),
            State::Done => f.write_str("Done"),
        }
    }
}

impl PlainExchange {
    pub(crate) fn new() -> Self {
        Self {
            state: State::AwaitingMessage,
        }
    }

    /// Parses `[authzid] NUL authcid NUL passwd` (RFC 4616 §2).
    pub(crate) fn receive(&mut self, context: &Context, data: &[u8]) -> Step {
        if !matches!(
            std::mem::replace(&mut self.state, State::Done),
            State::AwaitingMessage
        ) {
            return Step::Failure(Failure::malformed("unexpected PLAIN message"));
        }
        match parse(context, data) {
            Ok((username, jid, password)) => {
                let step = Step::NeedCredentials {
                    username,
                    jid: jid.clone(),
                };
                self.state = State::AwaitingCredentials { jid, password };
                step
            }
            Err(failure) => Step::Failure(failure),
        }
    }

    /// Verifies the password against the account's credentials; an unknown account runs
    /// the same derivation against the server's stand-in values, and fails the same way.
    pub(crate) fn credentials(&mut self, context: &Context, found: Option<&Credentials>) -> Step {
        let State::AwaitingCredentials { jid, password } =
            std::mem::replace(&mut self.state, State::Done)
        else {
            return Step::Failure(Failure::malformed("credentials were not asked for"));
        };
        let (keys, known) = context.keys(PLAIN_HASH, &jid, found);
        // A password SASLprep refuses cannot have been stored; derive with the raw bytes
        // anyway so the failure costs the same as a wrong password.
        let (prepared, preparable) = match saslprep(&password) {
            Ok(prepared) => (prepared.into_owned(), true),
            Err(_) => (password, false),
        };
        let matches = verify_keys(
            PLAIN_HASH,
            &keys.salt,
            keys.iterations,
            &keys.stored_key,
            prepared.as_bytes(),
        );
        if matches && known && preparable {
            Step::Success {
                additional_data: None,
                identity: Authenticated {
                    jid,
                    mechanism: Mechanism::Plain,
                    channel_binding: None,
                },
            }
        } else {
            Step::Failure(Failure::new(
                SaslCondition::NotAuthorized,
                "the user name or password is wrong",
            ))
        }
    }
}

fn parse(context: &Context, data: &[u8]) -> Result<(String, BareJid, String), Failure> {
    let mut fields = data.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(Failure::malformed(
            "a PLAIN message has three fields separated by NUL",
        ));
    };
    let text = |field: &[u8], what: &str| {
        std::str::from_utf8(field)
            .map(str::to_owned)
            .map_err(|_| Failure::malformed(format!("the {what} is not UTF-8")))
    };
    let authzid = text(authzid, "authorization identity")?;
    let authcid = text(authcid, "user name")?;
    let password = text(password, "password")?;
    if authcid.is_empty() {
        return Err(Failure::malformed("the user name is empty"));
    }
    if password.is_empty() {
        return Err(Failure::malformed("the password is empty"));
    }
    let (username, jid) = context.user_jid(&authcid)?;
    if !authzid.is_empty() {
        context.check_authzid(&authzid, &jid)?;
    }
    Ok((username, jid, password))
}
