//! The Stripe client against the fake Stripe over loopback: what it sends, how it uses
//! idempotency keys, and how each kind of failure is sorted.

use jobs::config::Secret;
use jobs::stripe::client::{
    CheckoutSessionParams, CreatedRefund, HostedSession, PaymentRef, RefundParams, StripeClient, StripeError,
};
use sandbox::stripe::{FakeStripe, StripeRequest};

const SECRET_KEY: &str = "sk_test_paygate_client";
const CHECKOUT: &str = "/v1/checkout/sessions";

async fn start() -> (FakeStripe, StripeClient) {
    let fake = FakeStripe::start(SECRET_KEY).await;
    let client = StripeClient::new(&Secret::new(SECRET_KEY), fake.url()).unwrap();
    (fake, client)
}

fn checkout<'a>(customer: Option<&'a str>) -> CheckoutSessionParams<'a> {
    CheckoutSessionParams {
        user_id: 42,
        customer,
        price_id: "price_pro_monthly",
        plan: "pro",
        request_id: 7,
        success_url: "https://t.me/paygate_bot?start=paid",
        cancel_url: "https://t.me/paygate_bot?start=cancelled",
    }
}

fn field<'a>(request: &'a StripeRequest, name: &str) -> Option<&'a str> {
    request.form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn permanent_reason(result: Result<impl std::fmt::Debug, StripeError>) -> String {
    match result {
        Err(StripeError::Permanent { reason }) => reason,
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

fn assert_retryable(result: Result<impl std::fmt::Debug, StripeError>) {
    assert!(
        matches!(result, Err(StripeError::Retryable { .. })),
        "expected a retryable error, got {result:?}"
    );
}

#[tokio::test]
async fn a_checkout_session_carries_the_user_the_plan_and_the_key() {
    let (fake, client) = start().await;

    let session = client
        .create_checkout_session(&checkout(None), "checkout:7")
        .await
        .unwrap();

    assert!(session.id.starts_with("cs_test_"), "{session:?}");
    assert_eq!(session.url, format!("{}/pay/{}", fake.url(), session.id));
    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!((sent.method.as_str(), sent.path.as_str()), ("POST", CHECKOUT));
    assert_eq!(sent.idempotency_key.as_deref(), Some("checkout:7"));
    for (name, value) in [
        ("mode", "subscription"),
        ("client_reference_id", "42"),
        ("line_items[0][price]", "price_pro_monthly"),
        ("line_items[0][quantity]", "1"),
        ("metadata[telegram_user_id]", "42"),
        ("metadata[plan]", "pro"),
        ("metadata[request_id]", "7"),
        ("subscription_data[metadata][telegram_user_id]", "42"),
        ("subscription_data[metadata][plan]", "pro"),
        ("success_url", "https://t.me/paygate_bot?start=paid"),
        ("cancel_url", "https://t.me/paygate_bot?start=cancelled"),
    ] {
        assert_eq!(field(sent, name), Some(value), "{name} in {:?}", sent.form);
    }
    assert_eq!(field(sent, "customer"), None);
    let created = &fake.checkout_sessions()[0];
    assert_eq!(created["id"], session.id.as_str());
    assert_eq!(created["metadata"]["request_id"], "7");
}

#[tokio::test]
async fn a_known_customer_is_passed_to_checkout() {
    let (fake, client) = start().await;

    client
        .create_checkout_session(&checkout(Some("cus_Known123")), "checkout:8")
        .await
        .unwrap();

    assert_eq!(field(&fake.requests()[0], "customer"), Some("cus_Known123"));
    assert_eq!(fake.checkout_sessions()[0]["customer"], "cus_Known123");
}

#[tokio::test]
async fn the_same_key_twice_creates_one_session() {
    let (fake, client) = start().await;

    let first = client
        .create_checkout_session(&checkout(None), "checkout:9")
        .await
        .unwrap();
    let second = client
        .create_checkout_session(&checkout(None), "checkout:9")
        .await
        .unwrap();

    assert_eq!(first, second);
    assert_eq!(fake.count(CHECKOUT), 2);
    assert_eq!(fake.checkout_sessions().len(), 1);
}

#[tokio::test]
async fn a_key_reused_for_another_request_is_refused() {
    let (fake, client) = start().await;
    client.create_customer(1, "user:1").await.unwrap();

    let other_user = permanent_reason(client.create_customer(2, "user:1").await);
    let other_endpoint = permanent_reason(client.create_checkout_session(&checkout(None), "user:1").await);

    assert!(other_user.contains("idempotency_error"), "{other_user}");
    assert!(other_user.contains("same parameters"), "{other_user}");
    assert!(other_endpoint.contains("same endpoint"), "{other_endpoint}");
    assert_eq!(fake.customers().len(), 1);
    assert!(fake.checkout_sessions().is_empty());
}

#[tokio::test]
async fn a_server_error_is_retryable_and_the_retry_succeeds() {
    let (fake, client) = start().await;
    fake.fail_next(CHECKOUT, 500, 1);

    assert_retryable(client.create_checkout_session(&checkout(None), "checkout:10").await);
    let session = client.create_checkout_session(&checkout(None), "checkout:10").await;

    assert!(session.is_ok(), "{session:?}");
    assert_eq!(fake.count(CHECKOUT), 2);
    assert_eq!(fake.checkout_sessions().len(), 1);
}

#[tokio::test]
async fn rate_limits_and_busy_objects_are_retryable() {
    let (fake, client) = start().await;
    fake.fail_next(CHECKOUT, 429, 1);
    fake.fail_next(CHECKOUT, 409, 1);

    assert_retryable(client.create_checkout_session(&checkout(None), "checkout:11").await);
    assert_retryable(client.create_checkout_session(&checkout(None), "checkout:11").await);
    client
        .create_checkout_session(&checkout(None), "checkout:11")
        .await
        .unwrap();

    assert_eq!(fake.count(CHECKOUT), 3);
}

#[tokio::test]
async fn an_unknown_price_is_permanent_and_says_which() {
    let (fake, client) = start().await;
    fake.reject_price("price_pro_monthly");

    let reason = permanent_reason(client.create_checkout_session(&checkout(None), "checkout:12").await);
    // Stripe keeps a 400 under its key: the same request gets the same refusal.
    let again = permanent_reason(client.create_checkout_session(&checkout(None), "checkout:12").await);

    assert!(reason.contains("No such price: 'price_pro_monthly'"), "{reason}");
    assert!(reason.contains("resource_missing"), "{reason}");
    assert!(reason.contains("line_items[0][price]"), "{reason}");
    assert_eq!(again, reason);
    assert!(fake.checkout_sessions().is_empty());
}

#[tokio::test]
async fn a_declined_card_is_permanent() {
    let (fake, client) = start().await;
    fake.fail_next(CHECKOUT, 402, 1);

    let reason = permanent_reason(client.create_checkout_session(&checkout(None), "checkout:13").await);

    assert!(reason.contains("Your card was declined."), "{reason}");
    assert!(reason.contains("card_error"), "{reason}");
    assert!(reason.contains("decline_code generic_decline"), "{reason}");
}

#[tokio::test]
async fn a_customer_is_created_for_a_telegram_user() {
    let (fake, client) = start().await;

    let id = client.create_customer(42, "customer:42").await.unwrap();

    assert!(id.starts_with("cus_"), "{id}");
    let customers = fake.customers();
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0]["id"], id.as_str());
    assert_eq!(customers[0]["metadata"]["telegram_user_id"], "42");
    assert_eq!(fake.requests()[0].idempotency_key.as_deref(), Some("customer:42"));
}

#[tokio::test]
async fn a_base_url_with_a_trailing_slash_works_too() {
    let fake = FakeStripe::start(SECRET_KEY).await;
    let client = StripeClient::new(&Secret::new(SECRET_KEY), &format!("{}/", fake.url())).unwrap();

    client.create_customer(1, "customer:1").await.unwrap();

    assert_eq!(fake.requests()[0].path, "/v1/customers");
}

#[tokio::test]
async fn a_portal_session_leads_back_to_the_bot() {
    let (fake, client) = start().await;

    let HostedSession { id, url } = client
        .create_portal_session("cus_Portal1", "https://t.me/paygate_bot", "portal:1")
        .await
        .unwrap();

    assert!(id.starts_with("bps_"), "{id}");
    assert_eq!(url, format!("{}/portal/{id}", fake.url()));
    let sent = &fake.requests()[0];
    assert_eq!(sent.path, "/v1/billing_portal/sessions");
    assert_eq!(field(sent, "customer"), Some("cus_Portal1"));
    assert_eq!(field(sent, "return_url"), Some("https://t.me/paygate_bot"));
    assert_eq!(sent.idempotency_key.as_deref(), Some("portal:1"));
}

#[tokio::test]
async fn a_full_refund_by_charge() {
    let (fake, client) = start().await;
    let params = RefundParams {
        payment: PaymentRef::parse("ch_Paid1").unwrap(),
        amount: None,
        reason: Some("requested_by_customer"),
        refund_request_id: 5,
    };

    let refund = client.create_refund(&params, "refund:5").await.unwrap();

    assert!(refund.id.starts_with("re_"), "{refund:?}");
    assert_eq!(
        refund,
        CreatedRefund {
            id: refund.id.clone(),
            status: "succeeded".into(),
            amount: 2000,
            currency: "usd".into(),
            charge: Some("ch_Paid1".into()),
            payment_intent: Some("pi_Paid1".into()),
        }
    );
    let sent = &fake.requests()[0];
    assert_eq!(field(sent, "charge"), Some("ch_Paid1"));
    assert_eq!(field(sent, "amount"), None);
    assert_eq!(field(sent, "reason"), Some("requested_by_customer"));
    assert_eq!(field(sent, "metadata[refund_request_id]"), Some("5"));
    assert_eq!(sent.idempotency_key.as_deref(), Some("refund:5"));
}

#[tokio::test]
async fn partial_refunds_by_payment_intent_stop_at_the_amount_paid() {
    let (fake, client) = start().await;
    let partial = RefundParams {
        payment: PaymentRef::PaymentIntent("pi_Paid2"),
        amount: Some(500),
        reason: None,
        refund_request_id: 6,
    };

    let refund = client.create_refund(&partial, "refund:6").await.unwrap();
    let too_much = client
        .create_refund(
            &RefundParams {
                amount: Some(2000),
                refund_request_id: 7,
                ..partial
            },
            "refund:7",
        )
        .await;

    assert_eq!(refund.amount, 500);
    assert_eq!(refund.payment_intent.as_deref(), Some("pi_Paid2"));
    assert_eq!(refund.charge.as_deref(), Some("ch_Paid2"));
    assert_eq!(field(&fake.requests()[0], "amount"), Some("500"));
    assert_eq!(field(&fake.requests()[0], "payment_intent"), Some("pi_Paid2"));
    let reason = permanent_reason(too_much);
    assert!(reason.contains("amount_too_large"), "{reason}");
    assert_eq!(fake.refunds().len(), 1);
}

#[tokio::test]
async fn a_wrong_secret_key_is_permanent() {
    let fake = FakeStripe::start(SECRET_KEY).await;
    let client = StripeClient::new(&Secret::new("sk_test_someone_elses_key"), fake.url()).unwrap();

    let reason = permanent_reason(client.create_customer(1, "customer:1").await);

    assert!(reason.contains("Invalid API Key provided"), "{reason}");
    assert!(reason.contains("HTTP 401"), "{reason}");
    assert!(!reason.contains("someone_elses"), "the key leaks into {reason}");
    assert!(fake.customers().is_empty());
}

#[tokio::test]
async fn a_closed_port_is_retryable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = StripeClient::new(&Secret::new(SECRET_KEY), &format!("http://127.0.0.1:{port}")).unwrap();

    assert_retryable(client.create_customer(1, "customer:1").await);
}
