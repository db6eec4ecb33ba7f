use super::*;

const TOKEN: &str = "123:unit";

async fn call(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn post(fake: &FakeTelegram, token: &str, method: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new().post(format!("{}/bot{token}/{method}", fake.url()))
}

#[test]
fn multipart_bodies_are_read_field_by_field() {
    let body = "--XyZ\r\nContent-Disposition: form-data; name=\"url\"\r\n\r\nhttps://example.com/hook\r\n\
                --XyZ\r\ncontent-disposition: form-data; name=\"allowed_updates\"\r\n\r\n[\"message\"]\r\n\
                --XyZ\r\nContent-Disposition: form-data; name=\"drop_pending_updates\"\r\n\r\nfalse\r\n--XyZ--\r\n";
    let params = Params::parse("multipart/form-data; boundary=XyZ", body.as_bytes()).unwrap();
    assert_eq!(params.str("url"), Some("https://example.com/hook"));
    assert_eq!(params.json("allowed_updates"), Some(json!(["message"])));
    assert_eq!(params.bool("drop_pending_updates"), Some(false));
    assert_eq!(params.0.len(), 3);
}

#[tokio::test]
async fn form_parameters_are_read_like_json_ones() {
    let fake = FakeTelegram::start(TOKEN, Limits::default()).await;
    let form = [
        ("title", "Pro"),
        ("description", "Pro for 30 days"),
        ("payload", "pro"),
        ("currency", "XTR"),
        ("prices", r#"[{"label":"Pro","amount":250}]"#),
        ("subscription_period", "2592000"),
    ];

    let (status, body) = call(post(&fake, TOKEN, "createInvoiceLink").form(&form)).await;

    assert_eq!(status, 200, "{body}");
    let link = &fake.invoice_links()[0];
    assert_eq!(link["prices"][0]["amount"], 250);
    assert_eq!(link["subscription_period"], SUBSCRIPTION_PERIOD);
    assert_eq!(body["result"], link["link"]);
}

#[tokio::test]
async fn a_scripted_failure_is_served_the_given_times_then_the_method_works() {
    let fake = FakeTelegram::start(TOKEN, Limits::default()).await;
    fake.fail_next("getWebhookInfo", 500, 2);

    for _ in 0..2 {
        let (status, body) = call(post(&fake, TOKEN, "getwebhookinfo").json(&json!({}))).await;
        assert_eq!(status, 500);
        assert_eq!(
            body,
            json!({"ok": false, "error_code": 500, "description": "Internal Server Error"})
        );
    }
    let (status, body) = call(post(&fake, TOKEN, "getWebhookInfo").json(&json!({}))).await;
    assert_eq!((status, &body["result"]["url"]), (200, &json!("")));
}

/// The updates a stub webhook got, each with its secret token header.
type Received = Arc<Mutex<Vec<(Option<String>, Value)>>>;

/// A bot's webhook that records the updates it gets and refuses the pre-checkout queries of
/// user 13.
async fn stub_webhook() -> (String, Received) {
    #[handler]
    fn hook(headers: &poem::http::HeaderMap, Json(update): Json<Value>, got: Data<&Received>) -> poem::Response {
        let secret = headers
            .get(crate::telegram_updates::SECRET_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        got.lock().unwrap().push((secret, update.clone()));
        let Some(query) = update.get("pre_checkout_query") else {
            return poem::Response::builder()
                .status(poem::http::StatusCode::NO_CONTENT)
                .finish();
        };
        let mut answer = json!({"method": "answerPreCheckoutQuery", "pre_checkout_query_id": query["id"], "ok": true});
        if query["from"]["id"] == 13 {
            answer["ok"] = json!(false);
            answer["error_message"] = json!("Banned.");
        }
        poem::Response::builder()
            .content_type("application/json")
            .body(answer.to_string())
    }
    let got = Arc::new(Mutex::new(Vec::new()));
    let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await.unwrap();
    let port = acceptor.local_addr()[0].as_socket_addr().unwrap().port();
    let app = Route::new().at("/hook", poem::post(hook)).data(got.clone());
    tokio::spawn(async move { Server::new_with_acceptor(acceptor).run(app).await });
    (format!("http://127.0.0.1:{port}/hook"), got)
}

#[tokio::test]
async fn paying_a_link_asks_the_webhook_first_and_pays_only_if_it_agrees() {
    let fake = FakeTelegram::start(TOKEN, Limits::default()).await;
    let invoice = json!({"title": "Pro", "description": "Pro", "payload": "pro", "currency": "XTR",
        "prices": [{"label": "Pro", "amount": 250}], "subscription_period": SUBSCRIPTION_PERIOD});
    let (_, body) = call(post(&fake, TOKEN, "createInvoiceLink").json(&invoice)).await;
    let slug = body["result"]
        .as_str()
        .unwrap()
        .strip_prefix("https://t.me/$")
        .unwrap()
        .to_string();
    let pay = |path: String| {
        let url = format!("{}/sandbox/pay/{path}", fake.url());
        async move {
            let response = reqwest::get(url).await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };

    assert_eq!(pay("nope".into()).await.0, 404);
    let (status, text) = pay(slug.clone()).await;
    assert_eq!(
        (status, text.as_str()),
        (409, "no webhook set: run worker telegram set-webhook\n")
    );

    let (hook, got) = stub_webhook().await;
    let webhook = json!({"url": hook, "secret_token": "s3cret"});
    call(post(&fake, TOKEN, "setWebhook").json(&webhook)).await;
    let (status, text) = pay(format!("{slug}?user_id=13")).await;
    assert_eq!(status, 402, "{text}");
    assert!(text.contains("refused") && text.contains("Banned."), "{text}");
    assert_eq!(got.lock().unwrap().len(), 1, "nothing more after a refusal");

    let (status, text) = pay(slug).await;
    assert_eq!(status, 200, "{text}");
    let got = got.lock().unwrap().clone();
    let ids: Vec<i64> = got.iter().map(|(_, u)| u["update_id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [ids[0], ids[0] + 1, ids[0] + 2], "fresh, growing update ids");
    assert!(got.iter().all(|(secret, _)| secret.as_deref() == Some("s3cret")));
    let query = &got[1].1["pre_checkout_query"];
    assert_eq!(
        (&query["from"]["id"], &query["invoice_payload"]),
        (&json!(DEFAULT_PAYER), &json!("pro"))
    );
    assert_eq!(
        (&query["currency"], &query["total_amount"]),
        (&json!("XTR"), &json!(250))
    );
    let paid = &got[2].1["message"]["successful_payment"];
    let charge = paid["telegram_payment_charge_id"].as_str().unwrap();
    assert!(charge.starts_with("stx") && text.contains(charge), "{text}");
    assert_eq!(
        (&paid["total_amount"], &paid["is_first_recurring"]),
        (&json!(250), &json!(true))
    );
    let expires_in = paid["subscription_expiration_date"].as_i64().unwrap() - unix_now() as i64;
    assert!((SUBSCRIPTION_PERIOD - 60..=SUBSCRIPTION_PERIOD).contains(&expires_in));
    // The charge is one the fake can refund.
    let refund = json!({"user_id": DEFAULT_PAYER, "telegram_payment_charge_id": charge});
    let (status, _) = call(post(&fake, TOKEN, "refundStarPayment").json(&refund)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_payment_methods_check_the_token() {
    let fake = FakeTelegram::start(TOKEN, Limits::default()).await;
    fake.record_star_payment(5, "charge-1");
    let refund = json!({"user_id": 5, "telegram_payment_charge_id": "charge-1"});

    let (status, body) = call(post(&fake, "123:other", "refundStarPayment").json(&refund)).await;

    assert_eq!((status, &body["description"]), (401, &json!("Unauthorized")));
    assert!(fake.star_refunds().is_empty());
}
