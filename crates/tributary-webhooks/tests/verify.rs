//! Signature checks against the published Standard Webhooks vectors (with
//! the clock injected: their timestamps are years old) and PCO's scheme,
//! and every way a request is refused.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;
use tributary_core::Timestamp;
use tributary_webhooks::{DEFAULT_TOLERANCE, Rejection, Scheme, SecretKey, Verified, verify};

fn at(seconds: i64) -> Timestamp {
    chrono::DateTime::from_timestamp(seconds, 0).unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn secret(scheme: Scheme, id: i64, text: &str, event: Option<&str>) -> SecretKey {
    SecretKey {
        id,
        event: event.map(str::to_owned),
        key: scheme.key(text).unwrap(),
    }
}

/// The published vectors: secret, id, timestamp, payload, signature.
const VECTORS: [(&str, &str, i64, &str, &str); 2] = [
    (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        r#"{"test": 2432232314}"#,
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    ),
    (
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
        1649367553,
        r#"{"email":"test@example.com","username":"test_user"}"#,
        "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
    ),
];

/// A vector's request with its event type added where the check needs
/// one: the vectors' payloads have none, so they are checked for the
/// signature first, then read.
fn standard(prefix: &str, (id, timestamp, signature): (&str, i64, &str)) -> HeaderMap {
    headers(&[
        (&format!("{prefix}-id"), id),
        (&format!("{prefix}-timestamp"), &timestamp.to_string()),
        (&format!("{prefix}-signature"), signature),
    ])
}

fn check(
    h: &HeaderMap,
    body: &str,
    secrets: &[SecretKey],
    now: Timestamp,
) -> Result<Verified, Rejection> {
    verify(
        Scheme::StandardWebhooks,
        h,
        body.as_bytes(),
        secrets,
        now,
        DEFAULT_TOLERANCE,
    )
}

#[test]
fn the_published_vectors_verify_at_their_own_time_under_both_spellings() {
    for (text, id, ts, payload, signature) in VECTORS {
        let secrets = [secret(Scheme::StandardWebhooks, 7, text, None)];
        for prefix in ["webhook", "svix"] {
            let h = standard(prefix, (id, ts, signature));
            // The vectors' payloads carry no event `type`: the signature
            // checks out, and the body is then refused as no event.
            assert!(matches!(
                check(&h, payload, &secrets, at(ts)),
                Err(Rejection::Malformed(m)) if m.contains("`type`")
            ));
            // Tampered body, or a wrong secret: 401.
            let tampered = payload.replace('2', "3").replace("test_user", "test_usex");
            assert_eq!(
                check(&h, &tampered, &secrets, at(ts)),
                Err(Rejection::BadSignature)
            );
            let other = [secret(
                Scheme::StandardWebhooks,
                8,
                VECTORS[1 - usize::from(id == VECTORS[1].1)].0,
                None,
            )];
            assert_eq!(
                check(&h, payload, &other, at(ts)),
                Err(Rejection::BadSignature)
            );
        }
    }
}

#[test]
fn signing_gives_the_published_signatures() {
    for (text, id, ts, payload, signature) in VECTORS {
        let key = Scheme::StandardWebhooks.key(text).unwrap();
        assert_eq!(
            tributary_webhooks::sign_standard(&key, id, ts, payload.as_bytes()),
            signature
        );
    }
}

/// Signs `body` as a Standard Webhooks sender does.
fn sign(text: &str, id: &str, ts: i64, body: &str) -> String {
    let key = Scheme::StandardWebhooks.key(text).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

const CLERK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const USER_CREATED: &str = r#"{"data":{"id":"user_1","updated_at":1700000000000},"object":"event","type":"user.created","timestamp":1700000000000}"#;

#[test]
fn a_signed_event_yields_its_delivery_with_id_type_and_time() {
    let ts = 1_700_000_000;
    let h = standard(
        "svix",
        ("msg_1", ts, &sign(CLERK_SECRET, "msg_1", ts, USER_CREATED)),
    );
    let secrets = [secret(Scheme::StandardWebhooks, 3, CLERK_SECRET, None)];
    let verified = check(&h, USER_CREATED, &secrets, at(ts + 10)).unwrap();
    assert_eq!(verified.secret_id, 3);
    let delivery = &verified.deliveries[0];
    assert_eq!(
        (delivery.id.as_str(), delivery.event.as_str()),
        ("msg_1", "user.created")
    );
    assert_eq!(delivery.sent_at, Some(at(ts)));
    assert_eq!(delivery.payload, USER_CREATED);
}

#[test]
fn timestamps_past_the_tolerance_either_way_are_refused() {
    let ts = 1_700_000_000;
    let h = standard(
        "webhook",
        ("msg_1", ts, &sign(CLERK_SECRET, "msg_1", ts, USER_CREATED)),
    );
    let secrets = [secret(Scheme::StandardWebhooks, 1, CLERK_SECRET, None)];
    assert!(check(&h, USER_CREATED, &secrets, at(ts + 300)).is_ok());
    assert!(check(&h, USER_CREATED, &secrets, at(ts - 300)).is_ok());
    assert_eq!(
        check(&h, USER_CREATED, &secrets, at(ts + 301)),
        Err(Rejection::Stale(301))
    );
    assert_eq!(
        check(&h, USER_CREATED, &secrets, at(ts - 301)),
        Err(Rejection::Future(301))
    );
    let bad = headers(&[
        ("webhook-id", "msg_1"),
        ("webhook-timestamp", "yesterday"),
        ("webhook-signature", "v1,AAAA"),
    ]);
    let refused = check(&bad, USER_CREATED, &secrets, at(ts)).unwrap_err();
    assert_eq!((refused.status(), refused.reason()), (400, "malformed"));
    // Timestamps at the ends of the range: refused, never an overflow.
    for (extreme, reason) in [(i64::MIN, "stale"), (i64::MAX, "future"), (-ts, "stale")] {
        let h = headers(&[
            ("webhook-id", "msg_1"),
            ("webhook-timestamp", &extreme.to_string()),
            ("webhook-signature", "v1,AAAA"),
        ]);
        let refused = check(&h, USER_CREATED, &secrets, at(ts)).unwrap_err();
        assert_eq!(refused.reason(), reason, "{extreme}");
    }
}

#[test]
fn missing_headers_and_missing_secrets_are_401() {
    let ts = 1_700_000_000;
    let signature = sign(CLERK_SECRET, "msg_1", ts, USER_CREATED);
    let secrets = [secret(Scheme::StandardWebhooks, 1, CLERK_SECRET, None)];
    let full = [
        ("webhook-id", "msg_1"),
        ("webhook-timestamp", &*ts.to_string()),
        ("webhook-signature", &*signature),
    ];
    for missing in 0..3 {
        let some: Vec<(&str, &str)> = full
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != missing)
            .map(|(_, p)| *p)
            .collect();
        let refused = check(&headers(&some), USER_CREATED, &secrets, at(ts)).unwrap_err();
        assert!(
            matches!(refused, Rejection::MissingHeader(_)),
            "{refused:?}"
        );
        assert_eq!(refused.status(), 401);
    }
    assert_eq!(
        check(&headers(&full), USER_CREATED, &[], at(ts)),
        Err(Rejection::NoSecret)
    );
}

#[test]
fn during_a_rotation_any_v1_signature_against_any_secret_will_do() {
    let ts = 1_700_000_000;
    let old = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    // The sender signs with both its old and new secret; an ed25519 entry
    // is ignored.
    let both = format!(
        "v1a,ignored {} {}",
        sign(old, "msg_9", ts, USER_CREATED),
        sign(CLERK_SECRET, "msg_9", ts, USER_CREATED)
    );
    let h = standard("webhook", ("msg_9", ts, &both));
    // The receiver holds only the new one, or only the old one, or both.
    for held in [vec![CLERK_SECRET], vec![old], vec![old, CLERK_SECRET]] {
        let secrets: Vec<SecretKey> = held
            .iter()
            .enumerate()
            .map(|(i, t)| secret(Scheme::StandardWebhooks, i as i64, t, None))
            .collect();
        assert!(
            check(&h, USER_CREATED, &secrets, at(ts)).is_ok(),
            "{held:?}"
        );
    }
    let only_old = standard(
        "webhook",
        ("msg_9", ts, &sign(old, "msg_9", ts, USER_CREATED)),
    );
    let new_only = [secret(Scheme::StandardWebhooks, 1, CLERK_SECRET, None)];
    assert_eq!(
        check(&only_old, USER_CREATED, &new_only, at(ts)),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn secrets_are_checked_as_the_sender_writes_them() {
    assert!(Scheme::StandardWebhooks.key("whsec_not base64!").is_err());
    assert!(Scheme::StandardWebhooks.key("whsec_").is_err());
    assert!(Scheme::Pco.key("  ").is_err());
    // Svix's libraries also take the key without its prefix.
    assert_eq!(
        Scheme::StandardWebhooks.key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        Scheme::StandardWebhooks.key(CLERK_SECRET)
    );
    let debug = format!("{:?}", secret(Scheme::Pco, 1, "s3cret-value", None));
    assert!(!debug.contains("s3cret"), "{debug}");
}

/// A PCO delivery body as PCO writes it, spacing and escapes included.
const PCO_BODY: &str = "{\"data\":[{\"id\":\"d-100\",\"type\":\"EventDelivery\",\"attributes\":{\"name\":\"people.v2.events.person.updated\",\"attempt\":1,\"payload\":\"{\\\"data\\\":{\\\"type\\\":\\\"Person\\\",\\\"id\\\":\\\"42\\\",\\\"attributes\\\":{\\\"first_name\\\":\\\"Jos\\\\u00e9\\\"}}}\"},\"relationships\":{\"organization\":{\"data\":{\"type\":\"Organization\",\"id\":\"1\"}}}}]}";

fn pco_sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn pco(h: &HeaderMap, body: &[u8], secrets: &[SecretKey]) -> Result<Verified, Rejection> {
    verify(Scheme::Pco, h, body, secrets, at(0), DEFAULT_TOLERANCE)
}

#[test]
fn pco_signs_the_raw_bytes_not_the_json_they_parse_to() {
    let text = "0123456789abcdef0123456789abcdef";
    let secrets = [secret(Scheme::Pco, 5, text, None)];
    let h = headers(&[(
        "X-PCO-Webhooks-Authenticity",
        &pco_sign(text, PCO_BODY.as_bytes()),
    )]);
    let verified = pco(&h, PCO_BODY.as_bytes(), &secrets).unwrap();
    let delivery = &verified.deliveries[0];
    assert_eq!(delivery.id, "d-100");
    assert_eq!(delivery.event, "people.v2.events.person.updated");
    // The same JSON re-serialised (other spacing, the escape decoded) is
    // other bytes: its signature would not be the sender's.
    let reserialised =
        serde_json::to_vec_pretty(&serde_json::from_str::<serde_json::Value>(PCO_BODY).unwrap())
            .unwrap();
    assert_ne!(reserialised, PCO_BODY.as_bytes());
    assert_eq!(
        pco(&h, &reserialised, &secrets),
        Err(Rejection::BadSignature)
    );
    // Uppercase hex is the same signature.
    let upper = headers(&[(
        "x-pco-webhooks-authenticity",
        &pco_sign(text, PCO_BODY.as_bytes()).to_uppercase(),
    )]);
    assert!(pco(&upper, PCO_BODY.as_bytes(), &secrets).is_ok());
    // Missing, garbage, or another secret: 401.
    assert_eq!(
        pco(&HeaderMap::new(), PCO_BODY.as_bytes(), &secrets),
        Err(Rejection::MissingHeader("X-PCO-Webhooks-Authenticity"))
    );
    let garbage = headers(&[("X-PCO-Webhooks-Authenticity", "zz")]);
    assert_eq!(
        pco(&garbage, PCO_BODY.as_bytes(), &secrets),
        Err(Rejection::BadSignature)
    );
    let other = [secret(Scheme::Pco, 6, "another-secret", None)];
    assert_eq!(
        pco(&h, PCO_BODY.as_bytes(), &other),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn a_pco_secret_for_one_event_signs_that_event_only() {
    let (people, emails) = ("secret-person-updated", "secret-email-created");
    let secrets = [
        secret(
            Scheme::Pco,
            1,
            emails,
            Some("people.v2.events.email.created"),
        ),
        secret(
            Scheme::Pco,
            2,
            people,
            Some("people.v2.events.person.updated"),
        ),
    ];
    let h = headers(&[(
        "X-PCO-Webhooks-Authenticity",
        &pco_sign(people, PCO_BODY.as_bytes()),
    )]);
    assert_eq!(pco(&h, PCO_BODY.as_bytes(), &secrets).unwrap().secret_id, 2);
    // The email subscription's secret signing a person event: refused.
    let wrong = headers(&[(
        "X-PCO-Webhooks-Authenticity",
        &pco_sign(emails, PCO_BODY.as_bytes()),
    )]);
    assert!(matches!(
        pco(&wrong, PCO_BODY.as_bytes(), &secrets),
        Err(Rejection::WrongEvent { .. })
    ));
}

#[test]
fn an_authentic_pco_body_that_is_no_delivery_is_400() {
    let text = "s";
    let secrets = [secret(Scheme::Pco, 1, text, None)];
    for body in [
        "not json",
        "{}",
        r#"{"data":[]}"#,
        r#"{"data":[{"type":"Person","id":"1"}]}"#,
    ] {
        let h = headers(&[(
            "X-PCO-Webhooks-Authenticity",
            &pco_sign(text, body.as_bytes()),
        )]);
        let refused = pco(&h, body.as_bytes(), &secrets).unwrap_err();
        assert_eq!(refused.status(), 400, "{body}: {refused:?}");
    }
}
