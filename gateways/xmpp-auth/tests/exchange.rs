//! Hostile and unusual clients: unknown users, channel binding downgrades and mismatches,
//! impersonation through the authorization identity, mechanism policy, ordering and size
//! limits.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use hmac::{Hmac, KeyInit, Mac};
use imbus_core::ScramHash;
use imbus_xmpp_auth::{
    ChannelBinding, ChannelBindingType, Failure, MAX_MESSAGE_LEN, Mechanism, MechanismPolicy,
    Offer, SaslCondition, SaslServer, Step,
};
use sasl::common::ChannelBinding as Cb;
use scram_rs::ChannelBindType;
use sha2::{Digest, Sha256};

fn failure(t: &Transcript) -> &Failure {
    match &t.outcome {
        Ok(identity) => panic!("unexpected success as {}", identity.jid),
        Err(f) => f,
    }
}

fn server(offer: &Offer, mechanism: &str) -> SaslServer {
    SaslServer::new(&config(), offer, &domain(), mechanism, &mut rng()).unwrap()
}

/// (nonce, salt, iterations) of a server-first-message.
fn parse_server_first(challenge: &[u8]) -> (String, Vec<u8>, u32) {
    let text = std::str::from_utf8(challenge).unwrap();
    let mut parts = text.split(',');
    let nonce = parts.next().unwrap().strip_prefix("r=").unwrap().to_owned();
    let salt = STANDARD
        .decode(parts.next().unwrap().strip_prefix("s=").unwrap())
        .unwrap();
    let iterations = parts
        .next()
        .unwrap()
        .strip_prefix("i=")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(parts.next(), None);
    (nonce, salt, iterations)
}

#[test]
fn unknown_users_look_like_wrong_passwords() {
    let offer = tls_offer_with_bindings();
    let unknown = run(
        &mut XmppRs::scram_sha256("romeo", PASSWORD, Cb::None),
        &offer,
    );
    let wrong = run(
        &mut XmppRs::scram_sha256("juliet", "not pencil", Cb::None),
        &offer,
    );
    // The same failure, word for word.
    assert_eq!(failure(&unknown), failure(&wrong));
    assert_eq!(failure(&unknown).condition, SaslCondition::NotAuthorized);
    // The same shape of server-first-message.
    assert_eq!(unknown.challenges.len(), 1);
    assert_eq!(wrong.challenges.len(), 1);
    let (u_nonce, u_salt, u_iterations) = parse_server_first(&unknown.challenges[0]);
    let (w_nonce, w_salt, w_iterations) = parse_server_first(&wrong.challenges[0]);
    assert_eq!(u_nonce.len(), w_nonce.len());
    assert_eq!(u_salt.len(), w_salt.len());
    assert_eq!(u_iterations, w_iterations);
    assert_ne!(u_salt, w_salt);

    // The stand-in salt is stable (a changing salt would give the unknown user away), and
    // differs per user and per hash.
    let again = run(
        &mut XmppRs::scram_sha256("romeo", "other", Cb::None),
        &offer,
    );
    assert_eq!(parse_server_first(&again.challenges[0]).1, u_salt);
    let other_user = run(
        &mut XmppRs::scram_sha256("mercutio", PASSWORD, Cb::None),
        &offer,
    );
    assert_ne!(parse_server_first(&other_user.challenges[0]).1, u_salt);
    let sha1 = run(&mut XmppRs::scram_sha1("romeo", PASSWORD, Cb::None), &offer);
    assert_ne!(parse_server_first(&sha1.challenges[0]).1, u_salt);

    // PLAIN too.
    let unknown = run(&mut XmppRs::plain("romeo", PASSWORD), &offer);
    let wrong = run(&mut XmppRs::plain("juliet", "not pencil"), &offer);
    assert_eq!(failure(&unknown), failure(&wrong));
}

#[test]
fn an_account_added_later_gets_its_own_salt() {
    let offer = tls_offer_with_bindings();
    let before = run_with(
        &mut XmppRs::scram_sha256("juliet", PASSWORD, Cb::None),
        &offer,
        &HashMap::new(),
    );
    assert_eq!(failure(&before).condition, SaslCondition::NotAuthorized);
    let after = run(
        &mut XmppRs::scram_sha256("juliet", PASSWORD, Cb::None),
        &offer,
    );
    assert!(after.outcome.is_ok());
    assert_eq!(
        parse_server_first(&after.challenges[0]).1,
        accounts()[&jid("juliet")].sha256().salt()
    );
}

#[test]
fn y_flag_is_refused_when_plus_was_offered() {
    let offer = tls_offer_with_bindings();
    let t = run(
        &mut XmppRs::scram_sha256("juliet", PASSWORD, Cb::Unsupported),
        &offer,
    );
    let f = failure(&t);
    assert_eq!(f.condition, SaslCondition::NotAuthorized);
    assert!(f.reason.contains("downgrade"), "{f}");
    assert!(t.lookups.is_empty(), "refused before the account lookup");
    let mut client = ScramRs::new(
        false,
        ChannelBindType::Unsupported,
        ScramRsAuth {
            user: "juliet".into(),
            password: PASSWORD.into(),
            end_point: vec![],
            exporter: vec![],
        },
    );
    let t = run(&mut client, &offer);
    assert_eq!(failure(&t).condition, SaslCondition::NotAuthorized);
}

#[test]
fn wrong_channel_binding_data_is_refused() {
    let offer = tls_offer_with_bindings();
    // The client's TLS session is not this one (e.g. a man in the middle).
    let t = run(
        &mut XmppRs::scram_sha256("juliet", PASSWORD, Cb::TlsExporter(vec![0x99; 32])),
        &offer,
    );
    let f = failure(&t);
    assert_eq!(f.condition, SaslCondition::NotAuthorized);
    assert!(f.reason.contains("does not match"), "{f}");
    for sha256 in [false, true] {
        let mut client = ScramRs::new(
            sha256,
            ChannelBindType::TlsServerEndpoint,
            ScramRsAuth {
                user: "juliet".into(),
                password: PASSWORD.into(),
                end_point: vec![0x23; 32],
                exporter: EXPORTER.to_vec(),
            },
        );
        let t = run(&mut client, &offer);
        assert_eq!(failure(&t).condition, SaslCondition::NotAuthorized);
    }
}

#[test]
fn binding_types_that_are_not_available_are_refused() {
    let exporter_only = Offer::new(
        plus_policy(),
        true,
        vec![ChannelBinding::new(
            ChannelBindingType::TlsExporter,
            EXPORTER.to_vec(),
        )],
    );
    let mut client = ScramRs::new(
        true,
        ChannelBindType::TlsServerEndpoint,
        ScramRsAuth {
            user: "juliet".into(),
            password: PASSWORD.into(),
            end_point: END_POINT.to_vec(),
            exporter: EXPORTER.to_vec(),
        },
    );
    let t = run(&mut client, &exporter_only);
    let f = failure(&t);
    assert_eq!(f.condition, SaslCondition::NotAuthorized);
    assert!(f.reason.contains("not available"), "{f}");
    // tls-unique (TLS 1.2 only, broken by the triple handshake attack) is not supported.
    let t = run(
        &mut XmppRs::scram_sha256("juliet", PASSWORD, Cb::TlsUnique(vec![1; 12])),
        &tls_offer_with_bindings(),
    );
    let f = failure(&t);
    assert_eq!(f.condition, SaslCondition::NotAuthorized);
    assert!(f.reason.contains("unsupported channel binding type"), "{f}");
}

#[test]
fn gs2_flags_must_fit_the_mechanism() {
    let offer = tls_offer_with_bindings();
    let cases = [
        // Channel binding asked for with a mechanism without -PLUS.
        ("SCRAM-SHA-256", "p=tls-exporter,,n=juliet,r=abc"),
        // A -PLUS mechanism without channel binding.
        ("SCRAM-SHA-256-PLUS", "n,,n=juliet,r=abc"),
        ("SCRAM-SHA-1-PLUS", "y,,n=juliet,r=abc"),
    ];
    for (mechanism, first) in cases {
        let mut s = server(&offer, mechanism);
        let Step::Failure(f) = s.start(Some(first.as_bytes())) else {
            panic!("{mechanism} accepted {first}");
        };
        assert_eq!(f.condition, SaslCondition::MalformedRequest, "{f}");
    }
}

/// A SCRAM-SHA-256 client-final-message computed by hand (no client crate sends an
/// authzid).
fn scram_sha256_final(
    client_first_bare: &str,
    gs2_header: &str,
    server_first: &[u8],
    password: &str,
) -> String {
    let server_first = std::str::from_utf8(server_first).unwrap();
    let (nonce, salt, iterations) = parse_server_first(server_first.as_bytes());
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut salted);
    let hmac = |key: &[u8], data: &[u8]| {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    };
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(&client_key);
    let without_proof = format!("c={},r={nonce}", STANDARD.encode(gs2_header));
    let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
    let signature = hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(a, b)| a ^ b)
        .collect();
    format!("{without_proof},p={}", STANDARD.encode(proof))
}

fn scram_with_authzid(authzid: &str) -> Result<imbus_xmpp_auth::Authenticated, Failure> {
    let offer = tls_offer_without_bindings();
    let mut s = server(&offer, "SCRAM-SHA-256");
    let gs2 = format!("n,a={authzid},");
    let bare = "n=juliet,r=authzidtest";
    match s.start(Some(format!("{gs2}{bare}").as_bytes())) {
        Step::NeedCredentials { .. } => {}
        Step::Failure(f) => return Err(f),
        other => panic!("{other:?}"),
    }
    let Step::Challenge(server_first) = s.credentials(accounts().get(&jid("juliet"))) else {
        panic!("no challenge");
    };
    let last = scram_sha256_final(bare, &gs2, &server_first, PASSWORD);
    match s.respond(last.as_bytes()) {
        Step::Success { identity, .. } => Ok(identity),
        Step::Failure(f) => Err(f),
        other => panic!("{other:?}"),
    }
}

#[test]
fn authzid_may_only_name_the_user_itself() {
    // Juliet's own JID is fine (and normalized: case folds).
    let identity = scram_with_authzid("Juliet@Example.com").unwrap();
    assert_eq!(identity.jid, jid("juliet"));
    // Anyone else is impersonation.
    for other in ["romeo@example.com", "juliet@example.org", "example.com"] {
        let f = scram_with_authzid(other).unwrap_err();
        assert_eq!(f.condition, SaslCondition::InvalidAuthzid, "{other}: {f}");
    }
    // A full JID or garbage is not a valid authzid either.
    for bad in ["juliet@example.com/balcony", "@@", "=2C"] {
        let f = scram_with_authzid(bad).unwrap_err();
        assert_eq!(f.condition, SaslCondition::InvalidAuthzid, "{bad}: {f}");
    }

    // PLAIN: "authzid NUL authcid NUL password".
    let offer = tls_offer_without_bindings();
    let plain = |message: &[u8]| -> Result<(), Failure> {
        let mut client = Raw {
            mechanism: "PLAIN",
            messages: vec![message.to_vec()],
        };
        run(&mut client, &offer).outcome.map(|_| ())
    };
    plain(b"juliet@example.com\0juliet\0pencil").unwrap();
    let f = plain(b"romeo@example.com\0juliet\0pencil").unwrap_err();
    assert_eq!(f.condition, SaslCondition::InvalidAuthzid);
    // Refused even with a wrong password, before the account is looked up.
    let f = plain(b"romeo@example.com\0juliet\0wrong").unwrap_err();
    assert_eq!(f.condition, SaslCondition::InvalidAuthzid);
}

#[test]
fn mechanisms_follow_the_offer_and_policy() {
    let no_tls = Offer::new(plus_policy(), false, vec![]);
    let refuse = |offer: &Offer, name: &str| {
        SaslServer::new(&config(), offer, &domain(), name, &mut rng())
            .unwrap_err()
            .condition
    };
    assert_eq!(refuse(&no_tls, "PLAIN"), SaslCondition::EncryptionRequired);
    assert_eq!(
        refuse(&no_tls, "SCRAM-SHA-256-PLUS"),
        SaslCondition::InvalidMechanism
    );
    assert_eq!(
        refuse(&no_tls, "DIGEST-MD5"),
        SaslCondition::InvalidMechanism
    );
    assert_eq!(
        refuse(&no_tls, "scram-sha-256"),
        SaslCondition::InvalidMechanism
    );
    let plain_off = Offer::new(MechanismPolicy::default(), true, vec![]);
    assert_eq!(refuse(&plain_off, "PLAIN"), SaslCondition::InvalidMechanism);
    assert_eq!(
        refuse(&tls_offer_without_bindings(), "SCRAM-SHA-1-PLUS"),
        SaslCondition::InvalidMechanism
    );
    let strict = Offer::new(
        MechanismPolicy {
            plain: true,
            require_channel_binding: true,
        },
        true,
        vec![ChannelBinding::new(
            ChannelBindingType::TlsExporter,
            EXPORTER.to_vec(),
        )],
    );
    assert_eq!(
        strict.mechanisms(),
        &[Mechanism::ScramSha256Plus, Mechanism::ScramSha1Plus]
    );
    assert_eq!(
        refuse(&strict, "SCRAM-SHA-1"),
        SaslCondition::MechanismTooWeak
    );
    assert_eq!(refuse(&strict, "PLAIN"), SaslCondition::MechanismTooWeak);
    let t = run(
        &mut XmppRs::scram_sha256("juliet", PASSWORD, Cb::TlsExporter(EXPORTER.to_vec())),
        &strict,
    );
    assert!(t.outcome.is_ok());
    // Over plain TCP, SCRAM still works (the gateway decides whether to allow that).
    let t = run(
        &mut XmppRs::scram_sha1("juliet", PASSWORD, Cb::None),
        &no_tls,
    );
    assert!(t.outcome.is_ok());
}

#[test]
fn calls_out_of_order_end_the_exchange() {
    let offer = tls_offer_with_bindings();
    let malformed = |step: Step| match step {
        Step::Failure(f) => assert_eq!(f.condition, SaslCondition::MalformedRequest, "{f}"),
        other => panic!("{other:?}"),
    };

    let mut s = server(&offer, "SCRAM-SHA-256");
    malformed(s.respond(b"n,,n=juliet,r=abc"));
    assert!(s.is_finished());
    malformed(s.start(None));

    let mut s = server(&offer, "SCRAM-SHA-256");
    malformed(s.credentials(None));

    let mut s = server(&offer, "SCRAM-SHA-256");
    assert_eq!(s.start(None), Step::Challenge(vec![]));
    assert!(matches!(
        s.respond(b"n,,n=juliet,r=abc"),
        Step::NeedCredentials { .. }
    ));
    // A response while the account is looked up.
    malformed(s.respond(b"c=biws,r=abc,p=AAAA"));
    malformed(s.credentials(accounts().get(&jid("juliet"))));

    let mut s = server(&offer, "PLAIN");
    assert!(matches!(
        s.start(Some(b"\0juliet\0pencil")),
        Step::NeedCredentials { .. }
    ));
    assert!(matches!(
        s.credentials(accounts().get(&jid("juliet"))),
        Step::Success { .. }
    ));
    malformed(s.respond(b"\0juliet\0pencil"));

    let mut s = server(&offer, "SCRAM-SHA-1");
    assert!(matches!(
        s.start(Some(b"n,,n=juliet,r=abc")),
        Step::NeedCredentials { .. }
    ));
    let Step::Failure(f) = s.lookup_failed() else {
        panic!()
    };
    assert_eq!(f.condition, SaslCondition::TemporaryAuthFailure);

    let mut s = server(&offer, "SCRAM-SHA-1");
    s.start(None);
    let Step::Failure(f) = s.abort() else {
        panic!()
    };
    assert_eq!(f.condition, SaslCondition::Aborted);
    assert!(s.is_finished());
}

#[test]
fn message_size_is_bounded() {
    let offer = tls_offer_with_bindings();
    let prefix = "n,,n=juliet,r=";
    let longest = format!("{prefix}{}", "x".repeat(MAX_MESSAGE_LEN - prefix.len()));
    assert_eq!(longest.len(), MAX_MESSAGE_LEN);
    let mut s = server(&offer, "SCRAM-SHA-256");
    assert!(matches!(
        s.start(Some(longest.as_bytes())),
        Step::NeedCredentials { .. }
    ));
    let too_long = format!("{longest}x");
    for mechanism in ["SCRAM-SHA-256", "PLAIN"] {
        let mut s = server(&offer, mechanism);
        let Step::Failure(f) = s.start(Some(too_long.as_bytes())) else {
            panic!()
        };
        assert_eq!(f.condition, SaslCondition::MalformedRequest);
        assert!(f.reason.contains("at most 4096"), "{f}");
    }
    // A final message over the limit.
    let mut s = server(&offer, "SCRAM-SHA-256");
    s.start(Some(b"n,,n=juliet,r=abc"));
    s.credentials(accounts().get(&jid("juliet")));
    let Step::Failure(f) = s.respond(&vec![b'c'; MAX_MESSAGE_LEN + 1]) else {
        panic!()
    };
    assert_eq!(f.condition, SaslCondition::MalformedRequest);
}

#[test]
fn malformed_first_messages() {
    let offer = tls_offer_without_bindings();
    let cases: &[(&[u8], SaslCondition)] = &[
        (b"", SaslCondition::MalformedRequest),
        (b"n,,", SaslCondition::MalformedRequest),
        (b"n", SaslCondition::MalformedRequest),
        (b"x,,n=juliet,r=abc", SaslCondition::MalformedRequest),
        (b"p=,,n=juliet,r=abc", SaslCondition::MalformedRequest),
        (b"n,b=x,n=juliet,r=abc", SaslCondition::MalformedRequest),
        (b"n,,m=ext,n=juliet,r=abc", SaslCondition::MalformedRequest),
        (b"n,,r=abc,n=juliet", SaslCondition::MalformedRequest),
        (b"n,,n=juliet", SaslCondition::MalformedRequest),
        (b"n,,n=juliet,r=", SaslCondition::MalformedRequest),
        (b"n,,n=juliet,r=a b", SaslCondition::MalformedRequest),
        (b"n,,n=,r=abc", SaslCondition::MalformedRequest),
        (b"n,,n=jul=iet,r=abc", SaslCondition::MalformedRequest),
        (b"n,,n=juliet,r=abc,,", SaslCondition::MalformedRequest),
        (b"n,,n=juliet,r=abc,1=x", SaslCondition::MalformedRequest),
        (b"n,,n=\xff,r=abc", SaslCondition::MalformedRequest),
        (b"n,,n=jul\0iet,r=abc", SaslCondition::MalformedRequest),
        // Not a valid localpart.
        (
            b"n,,n=juliet@example.com,r=abc",
            SaslCondition::MalformedRequest,
        ),
        (b"n,,n=a b,r=abc", SaslCondition::MalformedRequest),
    ];
    for (message, condition) in cases {
        let mut s = server(&offer, "SCRAM-SHA-256");
        match s.start(Some(message)) {
            Step::Failure(f) => assert_eq!(
                f.condition,
                *condition,
                "{:?}: {f}",
                String::from_utf8_lossy(message)
            ),
            other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(message)),
        }
    }
    // Optional extensions after the nonce are ignored; escaped names decode.
    let mut s = server(&offer, "SCRAM-SHA-256");
    assert!(matches!(
        s.start(Some(b"n,,n=juliet,r=abc,x=ext")),
        Step::NeedCredentials { .. }
    ));
    let mut s = server(&offer, "SCRAM-SHA-256");
    assert!(matches!(
        s.start(Some(b"n,,n=a=2Cb,r=abc")),
        Step::NeedCredentials { username, .. } if username == "a,b"
    ));

    let plain_cases: &[&[u8]] = &[
        b"",
        b"juliet",
        b"\0juliet",
        b"\0\0pencil",
        b"\0juliet\0",
        b"\0juliet\0pencil\0",
        b"\0jul\xffiet\0pencil",
        b"\0juliet@example.com\0pencil",
    ];
    for message in plain_cases {
        let mut s = server(&offer, "PLAIN");
        match s.start(Some(message)) {
            Step::Failure(f) => assert_eq!(f.condition, SaslCondition::MalformedRequest),
            other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(message)),
        }
    }
}

#[test]
fn malformed_final_messages() {
    let offer = tls_offer_without_bindings();
    let start = || {
        let mut s = server(&offer, "SCRAM-SHA-256");
        s.start(Some(b"n,,n=juliet,r=abc"));
        let Step::Challenge(first) = s.credentials(accounts().get(&jid("juliet"))) else {
            panic!()
        };
        let (nonce, _, _) = parse_server_first(&first);
        (s, nonce)
    };
    let proof = STANDARD.encode([0u8; 32]);
    let (_, nonce) = start();
    let cases: Vec<(String, SaslCondition)> = vec![
        (format!("c=biws,r={nonce}"), SaslCondition::MalformedRequest),
        (
            format!("r={nonce},p={proof}"),
            SaslCondition::MalformedRequest,
        ),
        (format!("c=biws,p={proof}"), SaslCondition::MalformedRequest),
        (
            format!("c=b!ws,r={nonce},p={proof}"),
            SaslCondition::IncorrectEncoding,
        ),
        (
            format!("c=biws,r={nonce},p=AA*="),
            SaslCondition::IncorrectEncoding,
        ),
        (
            format!("c=biws,r={nonce},p=AAAA"),
            SaslCondition::MalformedRequest,
        ),
        // c= must repeat the GS2 header ("n,,").
        (
            format!("c=eSws,r={nonce},p={proof}"),
            SaslCondition::NotAuthorized,
        ),
        (
            format!("c=biws,r={nonce}x,p={proof}"),
            SaslCondition::NotAuthorized,
        ),
        (
            format!("c=biws,r=abc,p={proof}"),
            SaslCondition::NotAuthorized,
        ),
        (
            format!("c=biws,r={nonce},p={proof}"),
            SaslCondition::NotAuthorized,
        ),
    ];
    for (message, condition) in cases {
        let (mut s, _) = start();
        // Each server has a fresh nonce source with the same seed: same nonce.
        let Step::Failure(f) = s.respond(message.as_bytes()) else {
            panic!("{message}")
        };
        assert_eq!(f.condition, condition, "{message}: {f}");
    }
}

#[test]
fn credentials_of_the_right_hash_are_used() {
    // SCRAM-SHA-1 and SCRAM-SHA-256 each use their own salt.
    let offer = tls_offer_without_bindings();
    let t1 = run(
        &mut XmppRs::scram_sha1("juliet", PASSWORD, Cb::None),
        &offer,
    );
    let t256 = run(
        &mut XmppRs::scram_sha256("juliet", PASSWORD, Cb::None),
        &offer,
    );
    let creds = &accounts()[&jid("juliet")];
    assert_eq!(
        parse_server_first(&t1.challenges[0]).1,
        creds.for_hash(ScramHash::Sha1).salt()
    );
    assert_eq!(
        parse_server_first(&t256.challenges[0]).1,
        creds.sha256().salt()
    );
}
