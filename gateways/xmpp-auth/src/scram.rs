//! The server side of SCRAM (RFC 5802, RFC 7677) with channel binding (RFC 5802 §6,
//! RFC 5929, RFC 9266).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use imbus_core::{BareJid, Credentials, ScramHash};
use subtle::{Choice, ConstantTimeEq};

use crate::condition::{Failure, SaslCondition};
use crate::credentials::{digest, hmac};
use crate::mechanism::{ChannelBindingType, Mechanism};
use crate::server::{Authenticated, Context, Step, StoredKeys};

/// Whether a nonce is made of printable ASCII other than `,` (RFC 5802 §7), and not empty.
pub(crate) fn is_valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

#[derive(Debug)]
pub(crate) struct ScramExchange {
    hash: ScramHash,
    plus: bool,
    server_nonce: String,
    state: State,
}

#[derive(Debug)]
enum State {
    AwaitingFirst,
    AwaitingCredentials(ClientFirst),
    AwaitingFinal(Box<Pending>),
    Done,
}

/// What the client's first message established.
#[derive(Debug)]
struct ClientFirst {
    /// The GS2 header as sent, e.g. `n,,` or `p=tls-exporter,a=juliet@example.com,`.
    gs2_header: String,
    /// client-first-message-bare, part of the AuthMessage.
    bare: String,
    /// client nonce + server nonce.
    nonce: String,
    jid: BareJid,
    binding: Option<ChannelBindingType>,
}

#[derive(Debug)]
struct Pending {
    first: ClientFirst,
    server_first: String,
    keys: StoredKeys,
    known: bool,
}

/// The channel binding flag of a GS2 header (RFC 5802 §7, `gs2-cbind-flag`).
enum CbindFlag<'a> {
    /// `n`: the client does not support channel binding.
    No,
    /// `y`: the client supports it but thinks the server does not.
    ClientOnly,
    /// `p=<cb-name>`: the client requires this binding type.
    Required(&'a str),
}

impl ScramExchange {
    pub(crate) fn new(hash: ScramHash, plus: bool, server_nonce: String) -> Self {
        Self {
            hash,
            plus,
            server_nonce,
            state: State::AwaitingFirst,
        }
    }

    fn mechanism(&self) -> Mechanism {
        match (self.hash, self.plus) {
            (ScramHash::Sha256, true) => Mechanism::ScramSha256Plus,
            (ScramHash::Sha1, true) => Mechanism::ScramSha1Plus,
            (ScramHash::Sha256, false) => Mechanism::ScramSha256,
            (ScramHash::Sha1, false) => Mechanism::ScramSha1,
        }
    }

    pub(crate) fn receive(&mut self, context: &Context, data: &[u8]) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitingFirst => match self.client_first(context, data) {
                Ok(first) => {
                    let step = Step::NeedCredentials {
                        username: first
                            .jid
                            .node()
                            .map(|n| n.as_str().to_owned())
                            .unwrap_or_default(),
                        jid: first.jid.clone(),
                    };
                    self.state = State::AwaitingCredentials(first);
                    step
                }
                Err(failure) => Step::Failure(failure),
            },
            State::AwaitingFinal(pending) => match self.client_final(context, &pending, data) {
                Ok(step) | Err(step) => step,
            },
            State::AwaitingCredentials(_) | State::Done => {
                Step::Failure(Failure::malformed("unexpected SCRAM message"))
            }
        }
    }

    pub(crate) fn credentials(&mut self, context: &Context, found: Option<&Credentials>) -> Step {
        let State::AwaitingCredentials(first) = std::mem::replace(&mut self.state, State::Done)
        else {
            return Step::Failure(Failure::malformed("credentials were not asked for"));
        };
        let (keys, known) = context.keys(self.hash, &first.jid, found);
        let server_first = format!(
            "r={},s={},i={}",
            first.nonce,
            STANDARD.encode(&keys.salt),
            keys.iterations
        );
        let step = Step::Challenge(server_first.clone().into_bytes());
        self.state = State::AwaitingFinal(Box::new(Pending {
            first,
            server_first,
            keys,
            known,
        }));
        step
    }

    /// Parses and checks client-first-message (RFC 5802 §7):
    ///
    /// ```text
    /// gs2-cbind-flag "," [ "a=" saslname ] "," [ "m=" … "," ] "n=" saslname "," "r=" c-nonce [ "," extensions ]
    /// ```
    fn client_first(&self, context: &Context, data: &[u8]) -> Result<ClientFirst, Failure> {
        let message = std::str::from_utf8(data)
            .map_err(|_| Failure::malformed("the SCRAM message is not UTF-8"))?;
        if message.contains('\0') {
            return Err(Failure::malformed("the SCRAM message contains NUL"));
        }
        let mut parts = message.splitn(3, ',');
        let (Some(flag), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(Failure::malformed("the GS2 header is incomplete"));
        };
        let gs2_header = &message[..flag.len() + authzid.len() + 2];
        let flag = match flag {
            "n" => CbindFlag::No,
            "y" => CbindFlag::ClientOnly,
            _ => match flag.strip_prefix("p=") {
                Some(name)
                    if !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') =>
                {
                    CbindFlag::Required(name)
                }
                _ => return Err(Failure::malformed("the channel binding flag is invalid")),
            },
        };
        let authzid = match authzid {
            "" => None,
            _ => match authzid.strip_prefix("a=") {
                Some(name) => Some(decode_saslname(name)?),
                None => return Err(Failure::malformed("the GS2 authzid is invalid")),
            },
        };

        let mut attributes = bare.split(',');
        let mut next = attributes.next().unwrap_or_default();
        if next.starts_with("m=") {
            return Err(Failure::malformed(
                "mandatory SCRAM extensions are not supported",
            ));
        }
        let username = match next.strip_prefix("n=") {
            Some(name) => decode_saslname(name)?,
            None => return Err(Failure::malformed("the user name (n=) is missing")),
        };
        next = attributes.next().unwrap_or_default();
        let client_nonce = match next.strip_prefix("r=") {
            Some(nonce) if is_valid_nonce(nonce) => nonce,
            Some(_) => return Err(Failure::malformed("the client nonce is invalid")),
            None => return Err(Failure::malformed("the client nonce (r=) is missing")),
        };
        for extension in attributes {
            check_extension(extension)?;
        }

        let binding = self.check_channel_binding(context, flag)?;
        let (_, jid) = context.user_jid(&username)?;
        if let Some(authzid) = authzid {
            context.check_authzid(&authzid, &jid)?;
        }
        Ok(ClientFirst {
            gs2_header: gs2_header.to_owned(),
            bare: bare.to_owned(),
            nonce: format!("{client_nonce}{}", self.server_nonce),
            jid,
            binding,
        })
    }

    /// The channel binding rules of RFC 5802 §6 and §7.
    fn check_channel_binding(
        &self,
        context: &Context,
        flag: CbindFlag<'_>,
    ) -> Result<Option<ChannelBindingType>, Failure> {
        match (flag, self.plus) {
            (CbindFlag::Required(name), true) => {
                let Some(kind) = ChannelBindingType::from_name(name) else {
                    return Err(Failure::new(
                        SaslCondition::NotAuthorized,
                        format!("unsupported channel binding type {name:?}"),
                    ));
                };
                if context.binding(kind).is_none() {
                    return Err(Failure::new(
                        SaslCondition::NotAuthorized,
                        format!("channel binding type {kind} is not available on this stream"),
                    ));
                }
                Ok(Some(kind))
            }
            (CbindFlag::Required(_), false) => Err(Failure::malformed(
                "channel binding was requested with a mechanism without -PLUS",
            )),
            (CbindFlag::No | CbindFlag::ClientOnly, true) => Err(Failure::malformed(
                "a -PLUS mechanism needs a channel binding (p=) in the GS2 header",
            )),
            (CbindFlag::ClientOnly, false) if context.offers_plus => Err(Failure::new(
                SaslCondition::NotAuthorized,
                "the client supports channel binding but believes the server does not, \
                 although it was offered: possible downgrade attack",
            )),
            (CbindFlag::No | CbindFlag::ClientOnly, false) => Ok(None),
        }
    }

    /// Checks client-final-message (RFC 5802 §7):
    ///
    /// ```text
    /// "c=" base64 "," "r=" nonce [ "," extensions ] "," "p=" base64
    /// ```
    fn client_final(
        &self,
        context: &Context,
        pending: &Pending,
        data: &[u8],
    ) -> Result<Step, Step> {
        let fail = |f: Failure| Step::Failure(f);
        let message = std::str::from_utf8(data)
            .map_err(|_| fail(Failure::malformed("the SCRAM message is not UTF-8")))?;
        let Some(proof_at) = message.rfind(",p=") else {
            return Err(fail(Failure::malformed("the client proof (p=) is missing")));
        };
        let without_proof = &message[..proof_at];
        let proof = &message[proof_at + 3..];

        let mut attributes = without_proof.split(',');
        let cbind = match attributes.next().and_then(|a| a.strip_prefix("c=")) {
            Some(c) => decode_base64(c, "channel binding")?,
            None => {
                return Err(fail(Failure::malformed(
                    "the channel binding (c=) is missing",
                )));
            }
        };
        let nonce = match attributes.next().and_then(|a| a.strip_prefix("r=")) {
            Some(r) => r,
            None => return Err(fail(Failure::malformed("the nonce (r=) is missing"))),
        };
        for extension in attributes {
            check_extension(extension).map_err(fail)?;
        }
        let proof = decode_base64(proof, "client proof")?;

        let first = &pending.first;
        let mut expected_cbind = first.gs2_header.as_bytes().to_vec();
        if let Some(kind) = first.binding {
            match context.binding(kind) {
                Some(binding) => expected_cbind.extend_from_slice(binding.data()),
                None => {
                    return Err(fail(Failure::new(
                        SaslCondition::NotAuthorized,
                        "the channel binding is no longer available",
                    )));
                }
            }
        }
        if !bool::from(cbind.ct_eq(&expected_cbind)) {
            let reason = if cbind.starts_with(first.gs2_header.as_bytes()) {
                "the channel binding data does not match this connection"
            } else {
                "the channel binding does not repeat the GS2 header"
            };
            return Err(fail(Failure::new(SaslCondition::NotAuthorized, reason)));
        }
        if nonce != first.nonce {
            return Err(fail(Failure::new(
                SaslCondition::NotAuthorized,
                "the nonce does not match",
            )));
        }
        if proof.len() != self.hash.output_len() {
            return Err(fail(Failure::malformed(format!(
                "the client proof is {} bytes, {} expects {}",
                proof.len(),
                self.mechanism(),
                self.hash.output_len()
            ))));
        }

        let auth_message = format!("{},{},{}", first.bare, pending.server_first, without_proof);
        let keys = &pending.keys;
        let client_signature = hmac(self.hash, &keys.stored_key, &[auth_message.as_bytes()]);
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let matches = digest(self.hash, &client_key).ct_eq(&keys.stored_key);
        if !bool::from(matches & Choice::from(u8::from(pending.known))) {
            return Err(fail(Failure::new(
                SaslCondition::NotAuthorized,
                "the user name or password is wrong",
            )));
        }
        let server_signature = hmac(self.hash, &keys.server_key, &[auth_message.as_bytes()]);
        Ok(Step::Success {
            additional_data: Some(format!("v={}", STANDARD.encode(server_signature)).into_bytes()),
            identity: Authenticated {
                jid: first.jid.clone(),
                mechanism: self.mechanism(),
                channel_binding: first.binding,
            },
        })
    }
}

fn decode_base64(text: &str, what: &str) -> Result<Vec<u8>, Step> {
    STANDARD.decode(text).map_err(|e| {
        Step::Failure(Failure::new(
            SaslCondition::IncorrectEncoding,
            format!("the {what} is not base64: {e}"),
        ))
    })
}

/// Decodes a `saslname` (RFC 5802 §7): `=2C` stands for `,` and `=3D` for `=`; any other
/// `=` is an error, as are empty names.
fn decode_saslname(name: &str) -> Result<String, Failure> {
    if name.is_empty() {
        return Err(Failure::malformed("an empty name was given"));
    }
    let mut decoded = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        decoded.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3);
        match escape {
            Some("=2C") => decoded.push(','),
            Some("=3D") => decoded.push('='),
            _ => return Err(Failure::malformed("a name contains an invalid = escape")),
        }
        rest = &rest[at + 3..];
    }
    decoded.push_str(rest);
    Ok(decoded)
}

/// An optional extension (`attr=value`, attr a letter): accepted and ignored; anything
/// else is malformed. Mandatory extensions (`m=`) are refused where they may appear.
fn check_extension(extension: &str) -> Result<(), Failure> {
    let bytes = extension.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b'=' {
        Ok(())
    } else {
        Err(Failure::malformed("a SCRAM attribute is malformed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saslnames_decode() {
        assert_eq!(decode_saslname("user").unwrap(), "user");
        assert_eq!(decode_saslname("a=2Cb=3Dc").unwrap(), "a,b=c");
        assert_eq!(decode_saslname("=3D=2C").unwrap(), "=,");
        for bad in ["", "a=", "a=2", "a=2c", "a=41", "=", "x=3Dy=ZZ"] {
            assert!(decode_saslname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nonces_are_checked() {
        assert!(is_valid_nonce("fyko+d2lbbFgONRv9qkxdawL"));
        assert!(!is_valid_nonce(""));
        assert!(!is_valid_nonce("a,b"));
        assert!(!is_valid_nonce("a b"));
        assert!(!is_valid_nonce("é"));
    }

    #[test]
    fn extensions_are_checked() {
        assert!(check_extension("x=1").is_ok());
        assert!(check_extension("x=").is_ok());
        assert!(check_extension("").is_err());
        assert!(check_extension("=x").is_err());
        assert!(check_extension("xy=1").is_err());
    }
}
