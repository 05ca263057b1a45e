//! The SCRAM examples of RFC 5802 §5 (SHA-1) and RFC 7677 §3 (SHA-256), reproduced byte
//! for byte with the nonces and salts of the RFCs.
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use imbus_core::{Credentials, ScramHash};
use imbus_xmpp_auth::{Mechanism, SaslServer, Step, derive_with_salt};

struct Vector {
    mechanism: &'static str,
    salt: &'static str,
    server_nonce: &'static str,
    client_first: &'static str,
    server_first: &'static str,
    client_final: &'static str,
    server_final: &'static str,
}

const RFC_5802: Vector = Vector {
    mechanism: "SCRAM-SHA-1",
    salt: "QSXCR+Q6sek8bf92",
    server_nonce: "3rfcNHYJY1ZVvWVs7j",
    client_first: "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
    server_first: "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
    client_final: "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    server_final: "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
};

const RFC_7677: Vector = Vector {
    mechanism: "SCRAM-SHA-256",
    salt: "W22ZaJ0SNY7soEsUEjb6gQ==",
    server_nonce: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    client_first: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
    server_first: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    client_final: "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    server_final: "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
};

/// Credentials for "pencil" with the RFCs' salts (both hashes get them).
fn rfc_credentials() -> Credentials {
    let salt1 = STANDARD.decode(RFC_5802.salt).unwrap();
    let salt256 = STANDARD.decode(RFC_7677.salt).unwrap();
    Credentials::new(
        derive_with_salt(ScramHash::Sha1, "pencil", salt1, 4096).unwrap(),
        derive_with_salt(ScramHash::Sha256, "pencil", salt256, 4096).unwrap(),
    )
    .unwrap()
}

fn reproduce(vector: &Vector, expected: Mechanism) {
    let credentials = rfc_credentials();
    let mut server = SaslServer::with_server_nonce(
        &config(),
        &tls_offer_without_bindings(),
        &domain(),
        vector.mechanism,
        vector.server_nonce,
    )
    .unwrap();
    let step = server.start(Some(vector.client_first.as_bytes()));
    assert_eq!(
        step,
        Step::NeedCredentials {
            username: "user".to_owned(),
            jid: jid("user"),
        }
    );
    let step = server.credentials(Some(&credentials));
    assert_eq!(
        step,
        Step::Challenge(vector.server_first.as_bytes().to_vec())
    );
    let step = server.respond(vector.client_final.as_bytes());
    let Step::Success {
        additional_data,
        identity,
    } = step
    else {
        panic!("{}: {step:?}", vector.mechanism);
    };
    assert_eq!(
        additional_data.as_deref(),
        Some(vector.server_final.as_bytes())
    );
    assert_eq!(identity.jid, jid("user"));
    assert_eq!(identity.mechanism, expected);
    assert_eq!(identity.channel_binding, None);
}

#[test]
fn rfc_5802_section_5_scram_sha_1() {
    reproduce(&RFC_5802, Mechanism::ScramSha1);
}

#[test]
fn rfc_7677_section_3_scram_sha_256() {
    reproduce(&RFC_7677, Mechanism::ScramSha256);
}

#[test]
fn a_changed_proof_in_the_rfc_exchange_fails() {
    let credentials = rfc_credentials();
    let mut server = SaslServer::with_server_nonce(
        &config(),
        &tls_offer_without_bindings(),
        &domain(),
        RFC_7677.mechanism,
        RFC_7677.server_nonce,
    )
    .unwrap();
    server.start(Some(RFC_7677.client_first.as_bytes()));
    server.credentials(Some(&credentials));
    let tampered = RFC_7677.client_final.replace("p=dHzb", "p=dHzc");
    let Step::Failure(failure) = server.respond(tampered.as_bytes()) else {
        panic!("a tampered proof was accepted");
    };
    assert_eq!(
        failure.condition,
        imbus_xmpp_auth::SaslCondition::NotAuthorized
    );
}
