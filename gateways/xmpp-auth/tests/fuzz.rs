//! Random and mutated client input, with a fixed seed: exchanges never panic, never
//! succeed without the password, and always end in a failure with a condition.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use imbus_xmpp_auth::{MAX_MESSAGE_LEN, Offer, SaslCondition, SaslServer, Step, decode_payload};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEEDS: &[&[u8]] = &[
    b"n,,n=juliet,r=fyko+d2lbbFgONRv9qkxdawL",
    b"y,,n=juliet,r=abc",
    b"p=tls-exporter,,n=juliet,r=abc",
    b"p=tls-server-end-point,a=juliet@example.com,n=juliet,r=abc,x=1",
    b"n,a=romeo@example.com,n=juliet,r=abc",
    b"n,,m=ext,n=user,r=abc",
    b"n,,n=a=2Cb=3D,r=abc",
    b"\0juliet\0pencil",
    b"juliet@example.com\0juliet\0pencil",
    b"c=biws,r=abc,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
];

const SPECIAL: &[u8] = b",=\0\xff\xc3 pnyacrmi";

fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..4) {
        match rng.random_range(0..7) {
            0 if !out.is_empty() => {
                let i = rng.random_range(0..out.len());
                out[i] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                let i = rng.random_range(0..=out.len());
                let b = SPECIAL[rng.random_range(0..SPECIAL.len())];
                out.insert(i, b);
            }
            2 if !out.is_empty() => {
                let start = rng.random_range(0..out.len());
                let end = rng.random_range(start..=out.len());
                out.drain(start..end);
            }
            3 if !out.is_empty() => {
                let cut = rng.random_range(0..out.len());
                out.truncate(cut);
            }
            4 => {
                let at = rng.random_range(0..=out.len());
                let chunk = out[..at].to_vec();
                out.extend_from_slice(&chunk);
            }
            5 => {
                let n = rng.random_range(0..2 * MAX_MESSAGE_LEN);
                out.extend(std::iter::repeat_n(b'A', n));
            }
            _ => {
                let i = rng.random_range(0..=out.len());
                let b: u8 = rng.random();
                out.insert(i, b);
            }
        }
    }
    out
}

fn random_bytes(rng: &mut StdRng) -> Vec<u8> {
    let len = match rng.random_range(0..10) {
        0 => rng.random_range(MAX_MESSAGE_LEN - 8..MAX_MESSAGE_LEN + 8),
        1..=3 => rng.random_range(0..4),
        _ => rng.random_range(0..200),
    };
    (0..len).map(|_| rng.random()).collect()
}

/// A client-final-message for a challenge, valid in form but with a random proof, then
/// maybe mutated.
fn final_for(rng: &mut StdRng, challenge: &[u8]) -> Vec<u8> {
    let nonce = std::str::from_utf8(challenge)
        .ok()
        .and_then(|c| c.split(',').next())
        .and_then(|r| r.strip_prefix("r="))
        .unwrap_or("abc")
        .to_owned();
    let cbind = [
        "biws",
        "eSws",
        "cD10bHMtZXhwb3J0ZXIsLBEREREREREREREREREREREREREREREREREREREREREQ==",
    ][rng.random_range(0..3)];
    let proof_len = [20, 32, 31][rng.random_range(0..3)];
    let proof: Vec<u8> = (0..proof_len).map(|_| rng.random()).collect();
    use base64::Engine;
    let message = format!(
        "c={cbind},r={nonce},p={}",
        base64::engine::general_purpose::STANDARD.encode(proof)
    )
    .into_bytes();
    if rng.random_bool(0.5) {
        mutate(rng, &message)
    } else {
        message
    }
}

#[test]
fn random_and_mutated_exchanges_fail_cleanly() {
    let mut rng = StdRng::seed_from_u64(0x5eed_0a17);
    let offers: [Offer; 3] = [
        tls_offer_with_bindings(),
        tls_offer_without_bindings(),
        Offer::new(plus_policy(), false, vec![]),
    ];
    let names = [
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "PLAIN",
        "DIGEST-MD5",
        "",
    ];
    let mut conditions = std::collections::HashMap::<SaslCondition, usize>::new();
    let mut lookups = 0;
    for round in 0..4000 {
        let offer = &offers[rng.random_range(0..offers.len())];
        let name = names[rng.random_range(0..names.len())];
        let mut server = match SaslServer::new(&config(), offer, &domain(), name, &mut rng) {
            Ok(server) => server,
            Err(failure) => {
                *conditions.entry(failure.condition).or_default() += 1;
                continue;
            }
        };
        // Random bytes, a mutated seed, or a seed of the mechanism's family as it is
        // (most of which get past the first message, to fuzz the later steps).
        let initial = match rng.random_range(0..4) {
            0 => random_bytes(&mut rng),
            1 => {
                let seed = SEEDS[rng.random_range(0..SEEDS.len())];
                mutate(&mut rng, seed)
            }
            _ if name == "PLAIN" => SEEDS[rng.random_range(7..9)].to_vec(),
            _ => SEEDS[rng.random_range(0..7)].to_vec(),
        };
        let mut step = if rng.random_bool(0.1) {
            server.start(None)
        } else {
            server.start(Some(&initial))
        };
        let mut turns = 0;
        loop {
            turns += 1;
            assert!(turns < 8, "round {round}: the exchange does not end");
            step = match step {
                Step::Challenge(challenge) => {
                    let response = match rng.random_range(0..4) {
                        0 => random_bytes(&mut rng),
                        1 if challenge.is_empty() => {
                            let seed = SEEDS[rng.random_range(0..SEEDS.len())];
                            mutate(&mut rng, seed)
                        }
                        _ => final_for(&mut rng, &challenge),
                    };
                    if rng.random_bool(0.02) {
                        server.abort()
                    } else {
                        server.respond(&response)
                    }
                }
                Step::NeedCredentials { jid, .. } => {
                    lookups += 1;
                    match rng.random_range(0..10) {
                        0 => server.lookup_failed(),
                        1 => server.respond(&initial),
                        _ => server.credentials(accounts().get(&jid)),
                    }
                }
                Step::Success { identity, .. } => {
                    // Only PLAIN with a seed whose password survived the mutation (the
                    // user name may change case: nodeprep folds it).
                    assert_eq!(identity.mechanism.name(), "PLAIN", "round {round}");
                    assert!(
                        initial.ends_with(b"\0pencil") && !initial.starts_with(b"romeo"),
                        "round {round}: {:?}",
                        String::from_utf8_lossy(&initial)
                    );
                    break;
                }
                Step::Failure(failure) => {
                    assert!(server.is_finished());
                    assert!(!failure.reason.is_empty());
                    *conditions.entry(failure.condition).or_default() += 1;
                    break;
                }
            };
        }
        // Whatever comes after the end is refused.
        let Step::Failure(after) = server.respond(b"n,,n=juliet,r=abc") else {
            panic!("round {round}: input accepted after the end");
        };
        assert_eq!(after.condition, SaslCondition::MalformedRequest);
    }
    // The loop reached deep into the exchanges, not only the first parser.
    assert!(lookups > 300, "{lookups} lookups");
    for condition in [
        SaslCondition::MalformedRequest,
        SaslCondition::NotAuthorized,
        SaslCondition::InvalidMechanism,
        SaslCondition::EncryptionRequired,
        SaslCondition::IncorrectEncoding,
        SaslCondition::InvalidAuthzid,
    ] {
        assert!(
            conditions.get(&condition).copied().unwrap_or(0) > 0,
            "{condition} never seen: {conditions:?}"
        );
    }
}

#[test]
fn random_payload_text_never_panics() {
    let mut rng = StdRng::seed_from_u64(0xba5e_6464);
    let alphabet = b"ABCabc019+/= \n=*\xc3\xa9";
    for _ in 0..20_000 {
        let len = if rng.random_bool(0.01) {
            rng.random_range(5000..7000)
        } else {
            rng.random_range(0..40)
        };
        let bytes: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect();
        let text = String::from_utf8_lossy(&bytes);
        match decode_payload(&text) {
            Ok(data) => assert!(data.len() <= MAX_MESSAGE_LEN),
            Err(f) => assert!(matches!(
                f.condition,
                SaslCondition::IncorrectEncoding | SaslCondition::MalformedRequest
            )),
        }
    }
}
