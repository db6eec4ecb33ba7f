use super::*;

#[test]
fn a_signature_is_stripes_hmac_of_the_timestamped_payload() {
    // Computed independently: HMAC-SHA256("whsec_test", "1700000000.{\"id\":\"evt_1\"}").
    assert_eq!(
        sign_webhook(r#"{"id":"evt_1"}"#, "whsec_test", 1_700_000_000),
        "t=1700000000,v1=c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925"
    );
}

#[test]
fn an_event_wraps_its_object_with_a_fresh_id() {
    let session = fixture("checkout.session");
    let first = event("checkout.session.completed", session.clone(), 1_700_000_000);
    let second = event("checkout.session.completed", session.clone(), 1_700_000_000);
    assert_eq!(first["type"], "checkout.session.completed");
    assert_eq!(first["data"]["object"], session);
    assert_eq!(first["api_version"], API_VERSION);
    assert_eq!(first["created"], 1_700_000_000);
    assert!(first["id"].as_str().unwrap().starts_with("evt_"));
    assert_ne!(first["id"], second["id"]);
}

#[test]
fn every_named_fixture_is_there() {
    for name in [
        "billing_portal.session",
        "charge",
        "checkout.session",
        "customer",
        "dispute",
        "event",
        "invoice",
        "refund",
        "subscription",
    ] {
        assert_eq!(fixture(name)["object"], name);
    }
}

#[test]
fn bracketed_maps_are_read_one_level_deep() {
    let form = vec![
        ("metadata[plan]".to_string(), "pro".to_string()),
        ("subscription_data[metadata][plan]".to_string(), "pro".to_string()),
        ("metadata[a][b]".to_string(), "x".to_string()),
    ];
    assert_eq!(Value::Object(map_param(&form, "metadata")), json!({"plan": "pro"}));
}

#[test]
fn a_refused_key_shows_only_its_ends() {
    assert_eq!(redacted("sk_test_wrong_key_1234"), "sk_test_**********1234");
    assert_eq!(redacted("short"), "*****");
}

// A webhook endpoint that checks each delivery's signature against `secret`, keeps the events,
// and answers `status`.
async fn endpoint(secret: &'static str, status: u16) -> (String, Arc<Mutex<Vec<Value>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let kept = received.clone();
    let app = poem::endpoint::make(move |request: poem::Request| {
        let kept = kept.clone();
        async move {
            let signature = request.header("stripe-signature").unwrap_or_default().to_string();
            let body = request.into_body().into_string().await.unwrap();
            let t: i64 = signature.split(',').next().unwrap()[2..].parse().unwrap();
            assert_eq!(signature, sign_webhook(&body, secret, t), "a delivery is signed");
            kept.lock().unwrap().push(serde_json::from_str::<Value>(&body).unwrap());
            poem::Response::builder()
                .status(poem::http::StatusCode::from_u16(status).unwrap())
                .body(format!("answered {status}"))
        }
    });
    let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await.unwrap();
    let port = acceptor.local_addr()[0].as_socket_addr().unwrap().port();
    tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
    (format!("http://127.0.0.1:{port}/webhooks/stripe"), received)
}

fn asked(user_id: i64) -> Trigger {
    Trigger {
        user_id,
        ..Trigger::default()
    }
}

#[tokio::test]
async fn triggered_events_are_one_subscriptions_life_and_every_delivery_is_listed() {
    let fake = FakeStripe::start(SECRET_KEY).await;
    let (url, received) = endpoint("whsec_unit", 200).await;
    fake.send_webhooks_to(&url, "whsec_unit");

    let started = fake
        .trigger(
            "checkout.session.completed",
            &Trigger {
                plan: Some("pro_monthly".into()),
                ..asked(7)
            },
        )
        .await
        .unwrap();
    let types: Vec<&str> = started.deliveries.iter().map(|d| d.event_type.as_str()).collect();
    assert_eq!(
        types,
        ["checkout.session.completed", "invoice.paid", "invoice_payment.paid"]
    );
    assert!(started.deliveries.iter().all(Delivery::succeeded));
    assert_eq!(started.deliveries[0].answer, "answered 200");
    let sub = started.subscription.clone();
    let tag = sub.trim_start_matches("sub_");

    // A failed renewal, then its invoice paid: the same invoice, the next period.
    let failed = fake.trigger("invoice.payment_failed", &asked(7)).await.unwrap();
    let renewed = fake.trigger("invoice.paid", &asked(7)).await.unwrap();
    let refunded = fake.trigger("charge.refunded", &asked(7)).await.unwrap();
    assert_eq!(refunded.deliveries[0].event_type, "charge.refunded");
    let ended = fake.trigger("customer.subscription.deleted", &asked(7)).await.unwrap();
    assert_eq!(
        [&failed.subscription, &renewed.subscription, &ended.subscription],
        [&sub; 3]
    );

    let events = received.lock().unwrap().clone();
    assert_eq!(events.len(), 3 + 1 + 2 + 1 + 1);
    let first_end = events[1]["data"]["object"]["lines"]["data"][0]["period"]["end"]
        .as_i64()
        .unwrap();
    assert_eq!(events[3]["data"]["object"]["id"], format!("in_{tag}_2"));
    assert_eq!(events[3]["data"]["object"]["status"], "open");
    let renewal = &events[4]["data"]["object"];
    assert_eq!(renewal["id"], format!("in_{tag}_2"));
    assert_eq!(renewal["lines"]["data"][0]["period"]["end"], first_end + 30 * 86_400);
    assert_eq!(events[5]["data"]["object"]["invoice"], format!("in_{tag}_2"));
    assert_eq!(events[6]["data"]["object"]["id"], format!("ch_{tag}_2"));
    assert_eq!(events[6]["data"]["object"]["refunded"], true);
    assert_eq!(events[7]["data"]["object"]["status"], "canceled");
    assert!(events.iter().all(|e| e["data"]["object"].to_string().contains(tag)));

    // Every delivery is listed over HTTP, and a resend delivers the same event again.
    let listed: Vec<Value> = reqwest::get(format!("{}/sandbox/webhooks", fake.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 8);
    assert_eq!(listed[0]["type"], "checkout.session.completed");
    assert_eq!(listed[0]["status"], 200);
    assert_eq!(listed[0]["endpoint"], url);
    let first = listed[0]["event"].as_str().unwrap();
    let resent = reqwest::Client::new()
        .post(format!("{}/sandbox/webhooks/{first}/resend", fake.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resent.status(), 200);
    assert_eq!(received.lock().unwrap()[8]["id"], first);
    assert_eq!(fake.deliveries().len(), 9);
}

#[tokio::test]
async fn a_trigger_over_http_says_what_it_cannot_send() {
    let fake = FakeStripe::start(SECRET_KEY).await;
    let http = reqwest::Client::new();
    let post = |path: &str| http.post(format!("{}{path}", fake.url())).send();

    // Nowhere to send to yet.
    let nowhere = post("/sandbox/trigger/invoice.paid?user_id=7").await.unwrap();
    assert_eq!(nowhere.status(), 409);
    let (url, received) = endpoint("whsec_unit", 500).await;
    fake.send_webhooks_to(&url, "whsec_unit");

    for (path, status, says) in [
        (
            "/sandbox/trigger/invoice.voided?user_id=7",
            400,
            "it triggers checkout.session.completed",
        ),
        ("/sandbox/trigger/invoice.paid", 400, "user_id"),
        ("/sandbox/trigger/checkout.session.completed?user_id=7", 400, "plan=…"),
        (
            "/sandbox/trigger/invoice.paid?user_id=7",
            404,
            "User 7 has no subscription in this fake",
        ),
        ("/sandbox/webhooks/evt_none/resend", 404, "No event evt_none"),
    ] {
        let answer = post(path).await.unwrap();
        assert_eq!(answer.status(), status, "{path}");
        let text = answer.text().await.unwrap();
        assert!(text.contains(says), "{path}: {text}");
    }
    assert!(received.lock().unwrap().is_empty());

    // A subscription that never paid has no charge to refund; an endpoint's 500 is recorded.
    let unpaid = post("/sandbox/trigger/checkout.session.async_payment_failed?user_id=7&plan=pro")
        .await
        .unwrap();
    assert_eq!(unpaid.status(), 200);
    let unpaid: Value = unpaid.json().await.unwrap();
    assert_eq!(unpaid["deliveries"][1]["type"], "checkout.session.async_payment_failed");
    assert_eq!(unpaid["deliveries"][1]["status"], 500);
    assert_eq!(unpaid["deliveries"][1]["answer"], "answered 500");
    let refund = post("/sandbox/trigger/charge.refunded?user_id=7").await.unwrap();
    assert_eq!(refund.status(), 409);
    assert_eq!(received.lock().unwrap().len(), 2);
}
