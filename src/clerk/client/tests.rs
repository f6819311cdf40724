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

fn clerk_refusal(status: u16, codes: &[&str]) -> ClientError {
    let errors: Vec<serde_json::Value> = codes
        .iter()
        .map(|code| serde_json::json!({"message": "refused", "long_message": "", "code": code}))
        .collect();
    let body = serde_json::json!({ "errors": errors }).to_string();
    match classify::<serde_json::Value>(
        Operation::CreateOrganizationInvitation,
        answer(status, &body),
    ) {
        Ok(value) => panic!("{status} {body} was read as a success: {value}"),
        Err(error) => error,
    }
}

#[test]
fn each_organization_refusal_is_read_from_its_code() {
    let cases = [
        (
            400,
            "duplicate_record",
            OrganizationRefusal::PendingInvitationExists,
        ),
        (
            400,
            "organization_invitation_not_unique",
            OrganizationRefusal::PendingInvitationExists,
        ),
        (
            400,
            "already_a_member_in_organization",
            OrganizationRefusal::AlreadyMember,
        ),
        (
            403,
            "organization_membership_quota_exceeded",
            OrganizationRefusal::OrganizationFull,
        ),
        (404, "resource_not_found", OrganizationRefusal::NotFound),
        (
            409,
            "organization_membership_managed_by_scim",
            OrganizationRefusal::ManagedByDirectorySync,
        ),
        (
            400,
            "organization_minimum_permissions_needed",
            OrganizationRefusal::LastAdmin,
        ),
        (
            404,
            "organization_invitation_not_pending",
            OrganizationRefusal::InvitationNotPending,
        ),
    ];
    for (status, code, expected) in cases {
        let error = clerk_refusal(status, &[code]);
        assert_eq!(error.organization_refusal(), Some(expected), "{code}");
        assert_eq!(OrganizationRefusal::from_code(code), Some(expected));
        assert!(!error.may_have_applied(), "{code}");
    }
}

#[test]
fn an_answer_without_an_organization_refusal_reads_as_none() {
    // A 403 that is not the quota is an authorization failure, not a full organization.
    assert_eq!(
        clerk_refusal(403, &["authorization_invalid"]).organization_refusal(),
        None
    );
    assert_eq!(clerk_refusal(502, &[]).organization_refusal(), None);
    assert_eq!(
        refusal(502, "<html>bad gateway</html>").organization_refusal(),
        None
    );
    // The first error Clerk lists that is one decides.
    assert_eq!(
        clerk_refusal(
            400,
            &[
                "form_param_unknown",
                "already_a_member_in_organization",
                "duplicate_record"
            ]
        )
        .organization_refusal(),
        Some(OrganizationRefusal::AlreadyMember)
    );
}

#[test]
fn operations_that_spend_the_hourly_limits_or_cannot_be_sent_twice_are_not_idempotent() {
    for operation in [
        Operation::CreateInvitation,
        Operation::CreateBulkInvitations,
        Operation::CreateOrganizationInvitation,
        Operation::CreateOrganizationInvitationsBulk,
    ] {
        assert!(operation.creates(), "{operation}");
        assert!(!operation.idempotent(), "{operation}");
    }
    assert!(!Operation::CreateOrganizationMembership.creates());
    assert!(!Operation::CreateOrganizationMembership.idempotent());
    for operation in [
        Operation::GetOrganization,
        Operation::ListOrganizationInvitations,
        Operation::RevokeOrganizationInvitation,
        Operation::UpdateOrganizationMembership,
        Operation::DeleteOrganizationMembership,
    ] {
        assert!(operation.idempotent(), "{operation}");
        assert!(!operation.creates(), "{operation}");
    }
}
