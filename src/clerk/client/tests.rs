use reqwest::header::RETRY_AFTER;
use reqwest::StatusCode;

use super::*;

fn rate(requests: u32, seconds: u64) -> RequestRate {
    RequestRate {
        requests,
        per: Duration::from_secs(seconds),
    }
}

fn answer(status: u16, body: &str) -> Answer<'_> {
    Answer {
        status: StatusCode::from_u16(status).unwrap_or(StatusCode::IM_A_TEAPOT),
        trace_id: Some("from-header"),
        retry_after: None,
        body: body.as_bytes(),
    }
}

fn refusal(status: u16, body: &str) -> ClientError {
    match classify::<serde_json::Value>(Operation::CreateInvitation, answer(status, body)) {
        Ok(value) => panic!("{status} {body} was read as a success: {value}"),
        Err(error) => error,
    }
}

const DUPLICATE: &str = r#"{"errors": [{"message": "duplicate", "long_message": "", "code": "duplicate_record"}], "clerk_trace_id": "from-body"}"#;

#[test]
fn a_success_is_its_body_read_as_the_operations_value() {
    let read = classify::<Vec<u32>>(Operation::ListUsers, answer(200, "[1, 2]"));
    assert_eq!(read.ok(), Some(vec![1, 2]));
}

#[test]
fn a_success_whose_body_is_not_the_value_is_a_decode_error_that_may_have_applied() {
    let error = classify::<Vec<u32>>(Operation::CreateBulkInvitations, answer(200, "{}"))
        .expect_err("not a list");
    assert!(
        matches!(error, ClientError::Decode { status: 200, .. }),
        "{error}"
    );
    assert!(error.may_have_applied());
}

#[test]
fn clerk_errors_are_read_with_their_codes_and_the_bodys_trace_id() {
    let error = refusal(400, DUPLICATE);
    assert!(
        matches!(error, ClientError::Clerk { status: 400, .. }),
        "{error}"
    );
    assert_eq!(error.codes(), vec!["duplicate_record"]);
    assert_eq!(error.trace_id(), Some("from-body"));
    assert!(!error.may_have_applied());
}

#[test]
fn a_429_is_rate_limited_with_its_wait_whatever_its_body() {
    let limited = Answer {
        retry_after: Some(Duration::from_secs(30)),
        ..answer(429, "not json")
    };
    let error = classify::<serde_json::Value>(Operation::CreateInvitation, limited)
        .expect_err("a 429 is an error");
    assert!(
        matches!(
            error,
            ClientError::RateLimited {
                retry_after: Some(wait),
                sent: true,
                ..
            } if wait == Duration::from_secs(30)
        ),
        "{error}"
    );
    assert_eq!(error.trace_id(), Some("from-header"));
    assert_eq!(error.status(), Some(429));
}

#[test]
fn a_server_error_without_clerk_errors_may_have_applied() {
    let error = refusal(502, "<html>bad gateway</html>");
    assert!(
        matches!(&error, ClientError::Clerk { status: 502, errors, .. } if errors.is_empty()),
        "{error}"
    );
    assert!(error.may_have_applied());
}

#[test]
fn a_client_error_without_clerk_errors_is_a_decode_error() {
    let error = refusal(404, "not found");
    assert!(
        matches!(error, ClientError::Decode { status: 404, .. }),
        "{error}"
    );
}

#[test]
fn retry_after_is_read_in_seconds_and_capped() {
    let with = |value: &str| {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(RETRY_AFTER, value);
        }
        retry_after(&headers)
    };
    assert_eq!(with(" 12 "), Some(Duration::from_secs(12)));
    assert_eq!(with("999999999999"), Some(MAX_RETRY_AFTER));
    assert_eq!(with("Wed, 21 Oct 2026 07:28:00 GMT"), None);
    assert_eq!(retry_after(&HeaderMap::new()), None);
}

#[test]
fn a_url_that_cannot_take_a_path_is_refused_before_any_request() {
    let options = ClientOptions {
        api_url: Url::parse("mailto:clerk@example.com").expect("a URL"),
        secret_key: SecretString::from("sk_test_x".to_owned()),
        timeout: Duration::from_secs(1),
        rate: None,
        retry: RetryPolicy::default(),
    };
    assert!(matches!(
        ClerkClient::new(options),
        Err(ClientError::InvalidApiUrl)
    ));
}

#[test]
fn the_limiter_keeps_a_margin_below_clerks_request_limits() {
    let test = rate(100, 10).with_margin();
    assert_eq!(test.requests, 95);
    assert_eq!(test.per, Duration::from_millis(10_250));
    assert_eq!(rate(1000, 10).with_margin().requests, 950);
    assert_eq!(rate(10, 1).with_margin().requests, 9);
    // A limit of one cannot spare any.
    assert_eq!(rate(1, 1).with_margin().requests, 1);
}
