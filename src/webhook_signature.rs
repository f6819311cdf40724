//! Webhook signature verification for Standard Webhooks (`webhook-*` headers) and Svix (`svix-*`
//! headers, used by Clerk); both sign `{id}.{timestamp}.{body}` with HMAC-SHA256.
//!
//! Not the `standardwebhooks` crate: it reads the clock itself and takes one secret (no rotation).

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

type HmacSha256 = Hmac<Sha256>;

/// How far the signed timestamp may be from the receiver's clock, in either direction.
pub const TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// The longest message id taken. Svix's are 31 characters; the id is stored to recognise a
/// redelivery, and an index cannot hold a value of any length.
pub const MAX_ID_LEN: usize = 256;

const SECRET_PREFIX: &str = "whsec_";
const SIGNATURE_VERSION: &str = "v1";

/// Which header family a delivery uses; the signing scheme itself is identical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks,
    /// `svix-id`, `svix-timestamp`, `svix-signature` (Clerk).
    Svix,
}

impl Scheme {
    /// The header name prefix, `"webhook-"` or `"svix-"`.
    pub const fn prefix(self) -> &'static str {
        match self {
            Scheme::StandardWebhooks => "webhook-",
            Scheme::Svix => "svix-",
        }
    }

    /// The message id header (stable across re-deliveries).
    pub const fn id_header(self) -> &'static str {
        match self {
            Scheme::StandardWebhooks => "webhook-id",
            Scheme::Svix => "svix-id",
        }
    }

    /// The Unix-seconds timestamp header.
    pub const fn timestamp_header(self) -> &'static str {
        match self {
            Scheme::StandardWebhooks => "webhook-timestamp",
            Scheme::Svix => "svix-timestamp",
        }
    }

    /// The space-separated `v1,<base64>` signature list header.
    pub const fn signature_header(self) -> &'static str {
        match self {
            Scheme::StandardWebhooks => "webhook-signature",
            Scheme::Svix => "svix-signature",
        }
    }
}

/// A configured secret is unusable. Never carries the secret or any part of it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("no webhook signing secret configured")]
    Empty,
    /// `position` is 1-based in the configured list (always 1 for [`sign`]).
    #[error(
        "webhook signing secret #{position} is not valid: expected `whsec_` followed by non-empty base64"
    )]
    Invalid { position: usize },
}

/// Why a delivery was rejected.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// A required header is absent (or, for the id, empty or not readable as text).
    #[error("missing or empty webhook header `{0}`")]
    MissingHeader(&'static str),
    /// The message id is longer than [`MAX_ID_LEN`].
    #[error("webhook header `{0}` is longer than {MAX_ID_LEN} characters")]
    IdTooLong(&'static str),
    #[error("webhook timestamp is not a Unix time in seconds")]
    InvalidTimestamp,
    #[error("webhook timestamp is too old")]
    TooOld,
    #[error("webhook timestamp is too far in the future")]
    TooNew,
    /// The signature header holds no `v1,` entry.
    #[error("no v1 webhook signature present")]
    NoSignature,
    #[error("webhook signature does not match")]
    Mismatch,
}

/// A delivery whose signature and timestamp checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The message id; the same on re-delivery, so it is the replay-dedup key.
    pub id: String,
    /// The signed Unix timestamp in seconds.
    pub timestamp: i64,
}

/// Verifies signatures against one or more decoded signing keys.
pub struct Verifier {
    keys: Vec<SecretSlice<u8>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Verifier {
    /// Secrets as configured (`whsec_...`), several during a rotation. An empty list, or a secret
    /// that is not valid base64, is an error naming its 1-based position (never its value).
    pub fn new<S: AsRef<str>>(secrets: &[S]) -> Result<Verifier, SecretError> {
        if secrets.is_empty() {
            return Err(SecretError::Empty);
        }
        let keys = secrets
            .iter()
            .enumerate()
            .map(|(index, secret)| {
                decode_secret(secret.as_ref())
                    .map(SecretSlice::from)
                    .ok_or(SecretError::Invalid {
                        position: index + 1,
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Verifier { keys })
    }

    /// Verifies a delivery from its headers and raw body bytes, as received (before any JSON
    /// parsing). `now_unix` is the receiver's current time in Unix seconds.
    pub fn verify(
        &self,
        scheme: Scheme,
        headers: &HeaderMap,
        body: &[u8],
        now_unix: i64,
    ) -> Result<Delivery, VerifyError> {
        let id_name = scheme.id_header();
        let id = headers
            .get(id_name)
            .and_then(|v| v.to_str().ok())
            // An empty id would make every later empty-id delivery a duplicate of this one.
            .filter(|id| !id.trim().is_empty())
            .ok_or(VerifyError::MissingHeader(id_name))?;
        if id.len() > MAX_ID_LEN {
            return Err(VerifyError::IdTooLong(id_name));
        }
        let timestamp_name = scheme.timestamp_header();
        let timestamp = headers
            .get(timestamp_name)
            .ok_or(VerifyError::MissingHeader(timestamp_name))?
            .to_str()
            .map_err(|_| VerifyError::InvalidTimestamp)?;
        let signature_name = scheme.signature_header();
        if !headers.contains_key(signature_name) {
            return Err(VerifyError::MissingHeader(signature_name));
        }
        // A proxy may split one list across repeated header lines; a value that is not text
        // cannot hold a base64 entry, so it is skipped rather than failing the others.
        let signatures = headers
            .get_all(signature_name)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let timestamp = self.check(id, timestamp, signatures, body, now_unix)?;
        Ok(Delivery {
            id: id.to_owned(),
            timestamp,
        })
    }

    /// Verifies already-extracted header values: `signatures` is the signature header's value.
    pub fn verify_parts(
        &self,
        id: &str,
        timestamp: &str,
        signatures: &str,
        body: &[u8],
        now_unix: i64,
    ) -> Result<(), VerifyError> {
        self.check(id, timestamp, [signatures], body, now_unix)
            .map(drop)
    }

    fn check<'a>(
        &self,
        id: &str,
        timestamp: &str,
        signature_values: impl IntoIterator<Item = &'a str>,
        body: &[u8],
        now_unix: i64,
    ) -> Result<i64, VerifyError> {
        let signed_at = parse_timestamp(timestamp)?;
        // i128 so that extreme values on either side cannot overflow the subtraction.
        let age = i128::from(now_unix) - i128::from(signed_at);
        let tolerance = i128::from(TOLERANCE.as_secs());
        if age > tolerance {
            return Err(VerifyError::TooOld);
        }
        if age < -tolerance {
            return Err(VerifyError::TooNew);
        }

        let entries: Vec<&str> = signature_values
            .into_iter()
            .flat_map(|value| value.split(' '))
            .filter_map(|entry| entry.split_once(','))
            .filter(|(version, _)| *version == SIGNATURE_VERSION)
            .map(|(_, signature)| signature)
            .collect();
        if entries.is_empty() {
            return Err(VerifyError::NoSignature);
        }
        // An undecodable entry can never match, and skipping it depends only on public input.
        let candidates: Vec<Vec<u8>> = entries
            .into_iter()
            .filter_map(|signature| BASE64.decode(signature).ok())
            .collect();

        // Every key is compared against every entry so timing does not reveal which one matched.
        let mut matched = Choice::from(0);
        for key in &self.keys {
            let expected = mac(key.expose_secret(), id, timestamp, body);
            for candidate in &candidates {
                matched |= expected.as_slice().ct_eq(candidate);
            }
        }
        if bool::from(matched) {
            Ok(signed_at)
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}

/// Signs a delivery the way the sender does, returning one `v1,<base64>` signature entry.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, SecretError> {
    let key = SecretSlice::from(decode_secret(secret).ok_or(SecretError::Invalid { position: 1 })?);
    let timestamp = timestamp.to_string();
    let signature = mac(key.expose_secret(), id, &timestamp, body);
    Ok(format!("{SIGNATURE_VERSION},{}", BASE64.encode(signature)))
}

fn decode_secret(secret: &str) -> Option<Vec<u8>> {
    // Svix's own libraries accept a bare base64 secret too, so the prefix is optional.
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    // Not `?`-propagating DecodeError: its message quotes the offending secret byte.
    let key = BASE64.decode(encoded).ok()?;
    // An empty key would make every signature forgeable.
    (!key.is_empty()).then_some(key)
}

fn parse_timestamp(timestamp: &str) -> Result<i64, VerifyError> {
    // `i64::from_str` would also take a sign; the signed text must be plain digits.
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::InvalidTimestamp);
    }
    timestamp.parse().map_err(|_| VerifyError::InvalidTimestamp)
}

// The timestamp is the header's text, not a re-formatted number: that text is what was signed.
fn mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID_A: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS_A: i64 = 1_614_265_330;
    const BODY_A: &[u8] = br#"{"test": 2432232314}"#;
    const SIG_A: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    const SECRET_B: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID_B: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TS_B: i64 = 1_649_367_553;
    const BODY_B: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const SIG_B: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    const THIRD_SECRET: &str = "whsec_dGhpcmQtc2VjcmV0LW5vdC1jb25maWd1cmVk";

    fn verifier(secrets: &[&str]) -> Verifier {
        Verifier::new(secrets).expect("valid secrets")
    }

    fn headers(scheme: Scheme, id: &str, timestamp: &str, signature: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in [
            (scheme.id_header(), id),
            (scheme.timestamp_header(), timestamp),
            (scheme.signature_header(), signature),
        ] {
            map.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        map
    }

    fn flip_byte(bytes: &[u8], index: usize) -> Vec<u8> {
        let mut out = bytes.to_vec();
        out[index] ^= 0x01;
        out
    }

    #[test]
    fn the_two_published_vectors_are_produced_by_sign() {
        assert_eq!(sign(SECRET_A, ID_A, TS_A, BODY_A).unwrap(), SIG_A);
        assert_eq!(sign(SECRET_B, ID_B, TS_B, BODY_B).unwrap(), SIG_B);
    }

    #[test]
    fn the_two_published_vectors_verify_under_both_schemes() {
        for scheme in [Scheme::StandardWebhooks, Scheme::Svix] {
            for (secret, id, ts, body, sig) in [
                (SECRET_A, ID_A, TS_A, BODY_A, SIG_A),
                (SECRET_B, ID_B, TS_B, BODY_B, SIG_B),
            ] {
                let delivery = verifier(&[secret])
                    .verify(scheme, &headers(scheme, id, &ts.to_string(), sig), body, ts)
                    .unwrap();
                assert_eq!(
                    delivery,
                    Delivery {
                        id: id.to_owned(),
                        timestamp: ts
                    }
                );
                verifier(&[secret])
                    .verify_parts(id, &ts.to_string(), sig, body, ts)
                    .unwrap();
            }
        }
    }

    #[test]
    fn a_flipped_byte_in_the_body_is_rejected() {
        let v = verifier(&[SECRET_A]);
        for index in [0, BODY_A.len() / 2, BODY_A.len() - 1] {
            let body = flip_byte(BODY_A, index);
            assert_eq!(
                v.verify_parts(ID_A, &TS_A.to_string(), SIG_A, &body, TS_A),
                Err(VerifyError::Mismatch)
            );
        }
    }

    #[test]
    fn a_flipped_byte_in_the_id_is_rejected() {
        let id = String::from_utf8(flip_byte(ID_A.as_bytes(), 5)).unwrap();
        assert_eq!(
            verifier(&[SECRET_A]).verify_parts(&id, &TS_A.to_string(), SIG_A, BODY_A, TS_A),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn a_flipped_byte_in_the_signature_is_rejected() {
        let v = verifier(&[SECRET_A]);
        // Skip the `v1,` prefix and the trailing `=` padding: flipping those tests parsing.
        for index in [3, 10, SIG_A.len() - 2] {
            let sig = String::from_utf8(flip_byte(SIG_A.as_bytes(), index)).unwrap();
            assert_eq!(
                v.verify_parts(ID_A, &TS_A.to_string(), &sig, BODY_A, TS_A),
                Err(VerifyError::Mismatch),
                "flipped index {index}: {sig}"
            );
        }
    }

    #[test]
    fn a_timestamp_more_than_five_minutes_old_is_too_old() {
        assert_eq!(
            verifier(&[SECRET_A]).verify_parts(ID_A, &TS_A.to_string(), SIG_A, BODY_A, TS_A + 301),
            Err(VerifyError::TooOld)
        );
    }

    #[test]
    fn a_timestamp_more_than_five_minutes_ahead_is_too_new() {
        assert_eq!(
            verifier(&[SECRET_A]).verify_parts(ID_A, &TS_A.to_string(), SIG_A, BODY_A, TS_A - 301),
            Err(VerifyError::TooNew)
        );
    }

    #[test]
    fn a_timestamp_exactly_five_minutes_away_either_way_is_accepted() {
        let v = verifier(&[SECRET_A]);
        for now in [TS_A + 300, TS_A - 300] {
            v.verify_parts(ID_A, &TS_A.to_string(), SIG_A, BODY_A, now)
                .unwrap();
        }
    }

    #[test]
    fn extreme_clock_values_do_not_overflow() {
        let v = verifier(&[SECRET_A]);
        assert_eq!(
            v.verify_parts(ID_A, &TS_A.to_string(), SIG_A, BODY_A, i64::MIN),
            Err(VerifyError::TooNew)
        );
        assert_eq!(
            v.verify_parts(ID_A, &i64::MAX.to_string(), SIG_A, BODY_A, i64::MIN),
            Err(VerifyError::TooNew)
        );
        assert_eq!(
            v.verify_parts(ID_A, "0", SIG_A, BODY_A, i64::MAX),
            Err(VerifyError::TooOld)
        );
    }

    #[test]
    fn a_non_numeric_timestamp_is_invalid() {
        let v = verifier(&[SECRET_A]);
        for ts in [
            "",
            "abc",
            "1614265330.5",
            "+1614265330",
            "-1",
            " 1614265330",
            "99999999999999999999",
        ] {
            assert_eq!(
                v.verify_parts(ID_A, ts, SIG_A, BODY_A, TS_A),
                Err(VerifyError::InvalidTimestamp),
                "timestamp {ts:?}"
            );
        }
        let map = headers(Scheme::Svix, ID_A, "soon", SIG_A);
        assert_eq!(
            v.verify(Scheme::Svix, &map, BODY_A, TS_A),
            Err(VerifyError::InvalidTimestamp)
        );
    }

    #[test]
    fn each_missing_header_is_named_for_both_schemes() {
        let v = verifier(&[SECRET_A]);
        for scheme in [Scheme::StandardWebhooks, Scheme::Svix] {
            for name in [
                scheme.id_header(),
                scheme.timestamp_header(),
                scheme.signature_header(),
            ] {
                let mut map = headers(scheme, ID_A, &TS_A.to_string(), SIG_A);
                map.remove(name);
                assert_eq!(
                    v.verify(scheme, &map, BODY_A, TS_A),
                    Err(VerifyError::MissingHeader(name))
                );
            }
        }
    }

    #[test]
    fn an_empty_id_counts_as_missing_even_when_signed() {
        let v = verifier(&[SECRET_A]);
        let timestamp = TS_A.to_string();
        for scheme in [Scheme::StandardWebhooks, Scheme::Svix] {
            for id in ["", " "] {
                let signature = sign(SECRET_A, id, TS_A, BODY_A).unwrap();
                let map = headers(scheme, id, &timestamp, &signature);
                assert_eq!(
                    v.verify(scheme, &map, BODY_A, TS_A),
                    Err(VerifyError::MissingHeader(scheme.id_header()))
                );
            }
        }
    }

    #[test]
    fn an_id_longer_than_the_limit_is_refused_even_when_signed() {
        let v = verifier(&[SECRET_A]);
        let timestamp = TS_A.to_string();
        for scheme in [Scheme::StandardWebhooks, Scheme::Svix] {
            let longest = "m".repeat(MAX_ID_LEN);
            let signature = sign(SECRET_A, &longest, TS_A, BODY_A).unwrap();
            let map = headers(scheme, &longest, &timestamp, &signature);
            assert!(v.verify(scheme, &map, BODY_A, TS_A).is_ok());
            let long = "m".repeat(MAX_ID_LEN + 1);
            let signature = sign(SECRET_A, &long, TS_A, BODY_A).unwrap();
            let map = headers(scheme, &long, &timestamp, &signature);
            assert_eq!(
                v.verify(scheme, &map, BODY_A, TS_A),
                Err(VerifyError::IdTooLong(scheme.id_header()))
            );
        }
    }

    #[test]
    fn headers_of_the_other_scheme_count_as_missing() {
        let map = headers(Scheme::Svix, ID_A, &TS_A.to_string(), SIG_A);
        assert_eq!(
            verifier(&[SECRET_A]).verify(Scheme::StandardWebhooks, &map, BODY_A, TS_A),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
    }

    #[test]
    fn scheme_header_names_use_the_scheme_prefix() {
        for scheme in [Scheme::StandardWebhooks, Scheme::Svix] {
            for name in [
                scheme.id_header(),
                scheme.timestamp_header(),
                scheme.signature_header(),
            ] {
                assert!(name.starts_with(scheme.prefix()), "{name}");
            }
        }
    }

    #[test]
    fn several_space_separated_signatures_where_one_matches_are_accepted() {
        let other = sign(THIRD_SECRET, ID_A, TS_A, BODY_A).unwrap();
        let list = format!("v1a,c2lnbmF0dXJl {other} v1,bm90LWEtc2ln {SIG_A} v2,abc");
        let v = verifier(&[SECRET_A]);
        v.verify_parts(ID_A, &TS_A.to_string(), &list, BODY_A, TS_A)
            .unwrap();
        let map = headers(Scheme::Svix, ID_A, &TS_A.to_string(), &list);
        assert_eq!(v.verify(Scheme::Svix, &map, BODY_A, TS_A).unwrap().id, ID_A);
    }

    #[test]
    fn signatures_split_across_repeated_headers_are_all_considered() {
        let scheme = Scheme::StandardWebhooks;
        let mut map = headers(scheme, ID_A, &TS_A.to_string(), "v1,bm90LWEtc2ln");
        map.append(
            HeaderName::from_static(scheme.signature_header()),
            HeaderValue::from_static(SIG_A),
        );
        verifier(&[SECRET_A])
            .verify(scheme, &map, BODY_A, TS_A)
            .unwrap();
    }

    #[test]
    fn only_non_v1_entries_mean_no_signature() {
        let v = verifier(&[SECRET_A]);
        let bare = SIG_A.trim_start_matches("v1,");
        for list in [
            format!("v1a,{bare}"),
            format!("v1a,{bare} v2,{bare}"),
            bare.to_owned(),
            String::new(),
        ] {
            assert_eq!(
                v.verify_parts(ID_A, &TS_A.to_string(), &list, BODY_A, TS_A),
                Err(VerifyError::NoSignature),
                "list {list:?}"
            );
        }
    }

    #[test]
    fn a_v1_entry_that_is_not_base64_is_a_mismatch() {
        assert_eq!(
            verifier(&[SECRET_A]).verify_parts(ID_A, &TS_A.to_string(), "v1,***", BODY_A, TS_A),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn a_rotated_secret_list_accepts_either_secret_and_rejects_a_third() {
        let v = verifier(&[SECRET_A, SECRET_B]);
        let ts = TS_A.to_string();
        for secret in [SECRET_A, SECRET_B] {
            let sig = sign(secret, ID_A, TS_A, BODY_A).unwrap();
            v.verify_parts(ID_A, &ts, &sig, BODY_A, TS_A).unwrap();
        }
        let sig = sign(THIRD_SECRET, ID_A, TS_A, BODY_A).unwrap();
        assert_eq!(
            v.verify_parts(ID_A, &ts, &sig, BODY_A, TS_A),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn a_secret_without_the_whsec_prefix_is_accepted() {
        let bare = SECRET_A.trim_start_matches("whsec_");
        assert_eq!(sign(bare, ID_A, TS_A, BODY_A).unwrap(), SIG_A);
        verifier(&[bare])
            .verify_parts(ID_A, &TS_A.to_string(), SIG_A, BODY_A, TS_A)
            .unwrap();
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let v = verifier(&[SECRET_A, SECRET_B]);
        let debug = format!("{v:?} {v:#?}");
        assert_eq!(format!("{v:?}"), "Verifier { keys: 2 }");
        for secret in [SECRET_A, SECRET_B] {
            assert!(!debug.contains(secret.trim_start_matches("whsec_")));
        }
    }

    #[test]
    fn a_bad_secret_is_an_error_naming_its_position_only() {
        let bad = "whsec_not*base64!secret";
        let err = Verifier::new(&[SECRET_A, bad]).unwrap_err();
        assert_eq!(err, SecretError::Invalid { position: 2 });
        let text = format!("{err} {err:?}");
        assert!(text.contains("#2"), "{text}");
        for fragment in ["not*base64", "!secret", "whsec_not", SECRET_A] {
            assert!(!text.contains(fragment), "{text}");
        }
        assert_eq!(
            sign(bad, ID_A, TS_A, BODY_A),
            Err(SecretError::Invalid { position: 1 })
        );
    }

    #[test]
    fn an_empty_secret_list_or_empty_key_is_rejected() {
        assert_eq!(Verifier::new::<&str>(&[]).unwrap_err(), SecretError::Empty);
        assert_eq!(
            Verifier::new(&["whsec_"]).unwrap_err(),
            SecretError::Invalid { position: 1 }
        );
    }

    #[test]
    fn verify_errors_never_echo_header_values() {
        let v = verifier(&[SECRET_A]);
        let errors = [
            v.verify_parts(ID_A, "nope", SIG_A, BODY_A, TS_A),
            v.verify_parts(ID_A, &TS_A.to_string(), "v1,AAAA", BODY_A, TS_A),
        ];
        for err in errors {
            let text = err.unwrap_err().to_string();
            assert!(!text.contains(ID_A) && !text.contains("AAAA"), "{text}");
        }
    }
}
