//! Round trips against client implementations from other crates: `sasl` (xmpp-rs) for
//! every mechanism with `tls-exporter`, `scram-rs` for `tls-server-end-point` (which the
//! `sasl` crate does not implement) and again for the others.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use imbus_xmpp_auth::{ChannelBindingType, Mechanism, SaslCondition};
use sasl::common::ChannelBinding as Cb;
use scram_rs::ChannelBindType;

fn assert_success(
    transcript: &Transcript,
    user: &str,
    mechanism: Mechanism,
    binding: Option<ChannelBindingType>,
) {
    let identity = transcript
        .outcome
        .as_ref()
        .unwrap_or_else(|f| panic!("{mechanism}: {f}"));
    assert_eq!(identity.jid, jid(user));
    assert_eq!(identity.mechanism, mechanism);
    assert_eq!(identity.channel_binding, binding);
    assert_eq!(transcript.lookups, vec![jid(user)]);
}

fn scram_rs_auth(user: &str, password: &str) -> ScramRsAuth {
    ScramRsAuth {
        user: user.to_owned(),
        password: password.to_owned(),
        end_point: END_POINT.to_vec(),
        exporter: EXPORTER.to_vec(),
    }
}

#[test]
fn xmpp_rs_scram_without_channel_binding() {
    for offer in [tls_offer_with_bindings(), tls_offer_without_bindings()] {
        let t = run(
            &mut XmppRs::scram_sha1("juliet", PASSWORD, Cb::None),
            &offer,
        );
        assert_success(&t, "juliet", Mechanism::ScramSha1, None);
        let t = run(
            &mut XmppRs::scram_sha256("juliet", PASSWORD, Cb::None),
            &offer,
        );
        assert_success(&t, "juliet", Mechanism::ScramSha256, None);
    }
}

#[test]
fn xmpp_rs_scram_plus_with_tls_exporter() {
    let offer = tls_offer_with_bindings();
    let cb = || Cb::TlsExporter(EXPORTER.to_vec());
    let t = run(&mut XmppRs::scram_sha1("juliet", PASSWORD, cb()), &offer);
    assert_success(
        &t,
        "juliet",
        Mechanism::ScramSha1Plus,
        Some(ChannelBindingType::TlsExporter),
    );
    let t = run(&mut XmppRs::scram_sha256("juliet", PASSWORD, cb()), &offer);
    assert_success(
        &t,
        "juliet",
        Mechanism::ScramSha256Plus,
        Some(ChannelBindingType::TlsExporter),
    );
}

#[test]
fn xmpp_rs_y_flag_is_fine_when_no_plus_was_offered() {
    let offer = tls_offer_without_bindings();
    let t = run(
        &mut XmppRs::scram_sha256("juliet", PASSWORD, Cb::Unsupported),
        &offer,
    );
    assert_success(&t, "juliet", Mechanism::ScramSha256, None);
}

#[test]
fn xmpp_rs_plain_over_tls() {
    let t = run(
        &mut XmppRs::plain("juliet", PASSWORD),
        &tls_offer_with_bindings(),
    );
    assert_success(&t, "juliet", Mechanism::Plain, None);
    assert!(t.challenges.is_empty());
}

#[test]
fn scram_rs_scram_plus_with_tls_server_end_point() {
    let offer = tls_offer_with_bindings();
    for (sha256, mechanism) in [
        (false, Mechanism::ScramSha1Plus),
        (true, Mechanism::ScramSha256Plus),
    ] {
        let mut client = ScramRs::new(
            sha256,
            ChannelBindType::TlsServerEndpoint,
            scram_rs_auth("juliet", PASSWORD),
        );
        let t = run(&mut client, &offer);
        assert_success(
            &t,
            "juliet",
            mechanism,
            Some(ChannelBindingType::TlsServerEndPoint),
        );
    }
}

#[test]
fn scram_rs_other_variants() {
    let offer = tls_offer_with_bindings();
    for (sha256, cb, mechanism, binding) in [
        (false, ChannelBindType::None, Mechanism::ScramSha1, None),
        (true, ChannelBindType::None, Mechanism::ScramSha256, None),
        (
            false,
            ChannelBindType::TlsExporter,
            Mechanism::ScramSha1Plus,
            Some(ChannelBindingType::TlsExporter),
        ),
        (
            true,
            ChannelBindType::TlsExporter,
            Mechanism::ScramSha256Plus,
            Some(ChannelBindingType::TlsExporter),
        ),
    ] {
        let mut client = ScramRs::new(sha256, cb, scram_rs_auth("juliet", PASSWORD));
        let t = run(&mut client, &offer);
        assert_success(&t, "juliet", mechanism, binding);
    }
}

#[test]
fn user_names_are_normalized_like_jids() {
    // Nodeprep folds case: "Juliet" is the account juliet@example.com.
    let t = run(
        &mut XmppRs::scram_sha256("Juliet", PASSWORD, Cb::None),
        &tls_offer_with_bindings(),
    );
    assert_success(&t, "juliet", Mechanism::ScramSha256, None);
}

#[test]
fn wrong_password_fails_with_every_client() {
    let offer = tls_offer_with_bindings();
    let clients: Vec<Box<dyn Client>> = vec![
        Box::new(XmppRs::scram_sha1("juliet", "pencil2", Cb::None)),
        Box::new(XmppRs::scram_sha256(
            "juliet",
            "Pencil",
            Cb::TlsExporter(EXPORTER.to_vec()),
        )),
        Box::new(XmppRs::plain("juliet", "pencil ")),
        Box::new(ScramRs::new(
            true,
            ChannelBindType::TlsServerEndpoint,
            scram_rs_auth("juliet", "wrong"),
        )),
    ];
    for mut client in clients {
        let t = run(client.as_mut(), &offer);
        let failure = t.outcome.unwrap_err();
        assert_eq!(failure.condition, SaslCondition::NotAuthorized, "{failure}");
        assert_eq!(t.lookups, vec![jid("juliet")]);
    }
}
