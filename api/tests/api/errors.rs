//! The caller's mistakes: each is a problem+json with the right status, and writes nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TOKEN, TestApp, assert_problem, spawn_app};

const NOTIFY: &str = "/v1/ops/notifications";

async fn post_raw(app: &TestApp, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn malformed_json_is_an_invalid_request() {
    let app = spawn_app().await;
    let resp = post_raw(&app, NOTIFY, r#"{"chat_id": 1, "text": "hi""#).await;
    assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
    assert_eq!(app.job_count().await, 0);
}

#[tokio::test]
async fn wrong_types_missing_and_unknown_fields_are_invalid_requests() {
    let app = spawn_app().await;
    for body in [
        json!({"chat_id": "one", "text": "hi"}),
        json!({"chat_id": 1.5, "text": "hi"}),
        json!({"chat_id": 1, "text": 7}),
        json!({"text": "hi"}),
        json!({"chat_id": 1}),
        json!({"chat_id": 1, "text": "hi", "parse_mode": "markdown"}),
        json!({"chat_id": 1, "text": "hi", "parse_mod": "html"}),
        json!({"chat_id": 1, "text": "hi", "buttons": [{"text": "Go", "url": "https://x"}]}),
        json!([1, 2]),
    ] {
        let resp = app.post_admin(NOTIFY, &body).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
    }
    assert_eq!(app.job_count().await, 0);
}

#[tokio::test]
async fn a_notification_telegram_would_refuse_is_an_invalid_notification() {
    let app = spawn_app().await;
    let cases = [
        (json!({"chat_id": 1, "text": ""}), "text must not be empty"),
        (json!({"chat_id": 1, "text": "   "}), "text must not be empty"),
        (json!({"chat_id": 0, "text": "hi"}), "chat_id"),
        (json!({"chat_id": 1, "text": "x".repeat(4097)}), "4096"),
        (
            json!({"chat_id": 1, "text": "hi", "buttons": [[{"text": "Go"}]]}),
            "exactly one",
        ),
        (
            json!({"chat_id": 1, "text": "hi", "buttons": [[{"text": "Go", "url": "javascript:alert(1)"}]]}),
            "https",
        ),
    ];
    for (body, says) in cases {
        let resp = app.post_admin(NOTIFY, &body).send().await.unwrap();
        let problem = assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-notification").await;
        assert!(problem["detail"].as_str().unwrap().contains(says), "{problem}");
    }
    assert_eq!(app.job_count().await, 0);
}

/// Absent is the API's only "none": a `null` anywhere in a body is refused, naming where, and
/// nothing is written; the same body without the field is taken.
#[tokio::test]
async fn a_null_in_a_request_body_is_refused_naming_it_and_nothing_is_written() {
    let app = spawn_app().await;
    for (path, body, at) in [
        (
            "/v1/ops/jobs/dead/retry",
            json!({"queue": null, "all": true}),
            "`/queue`",
        ),
        (
            "/v1/ops/jobs/dead/discard",
            json!({"all": true, "older_than_seconds": null}),
            "`/older_than_seconds`",
        ),
        (
            NOTIFY,
            json!({"chat_id": 1, "text": "hi", "parse_mode": null}),
            "`/parse_mode`",
        ),
        (
            NOTIFY,
            json!({"chat_id": 1, "text": "hi", "buttons": [[{"text": "Go", "url": null, "callback_data": "x"}]]}),
            "`/buttons/0/0/url`",
        ),
    ] {
        let resp = app.post_admin(path, &body).send().await.unwrap();
        let problem = assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains(at) && detail.contains("null"),
            "{path} {body}: {problem}"
        );
    }
    assert_eq!(app.job_count().await, 0);
    let resp = app
        .post_admin(
            NOTIFY,
            &json!({"chat_id": 1, "text": "hi", "buttons": [[{"text": "Go", "callback_data": "x"}]]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(app.job_count().await, 1);
}

#[tokio::test]
async fn a_nul_in_a_notification_is_an_invalid_request_naming_the_field_and_nothing_is_queued() {
    let app = spawn_app().await;
    // serde_json writes U+0000 as the escape `\u0000`, the only way JSON can carry it.
    for body in [
        json!({"chat_id": 1, "text": "hi\u{0}there"}),
        json!({"chat_id": 1, "text": "hi", "buttons": [[{"text": "G\u{0}o", "callback_data": "x"}]]}),
        // The URL parser would quietly percent-encode it; the stored payload could not hold it.
        json!({"chat_id": 1, "text": "hi", "buttons": [[{"text": "Go", "url": "https://t.me/x\u{0}"}]]}),
        json!({"chat_id": 1, "text": "hi", "buttons": [[{"text": "Go", "callback_data": "promo:\u{0}"}]]}),
    ] {
        let resp = app.post_admin(NOTIFY, &body).send().await.unwrap();
        let problem = assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("U+0000"), "{problem}");
        assert!(
            detail.contains("`/text`") || detail.contains("`/buttons/0/0/"),
            "{problem}"
        );
    }
    assert_eq!(app.job_count().await, 0);
    // The escape as a client writes it; `\U0000` and a raw NUL byte are not JSON at all.
    let resp = post_raw(&app, NOTIFY, r#"{"chat_id": 1, "text": "a\u0000"}"#).await;
    assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
    for not_json in [
        &br#"{"chat_id": 1, "text": "a\U0000"}"#[..],
        b"{\"chat_id\": 1, \"text\": \"a\x00\"}",
    ] {
        let resp = post_raw(&app, NOTIFY, not_json.to_vec()).await;
        assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
    }
    assert_eq!(app.job_count().await, 0);

    // The six characters `\u0000` (its backslash escaped) are text like any other.
    let resp = post_raw(&app, NOTIFY, r#"{"chat_id": 1, "text": "a\\u0000"}"#).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let jobs = app.jobs_of("notifications").await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].1["text"], "a\\u0000");
}

#[tokio::test]
async fn a_body_over_64_kib_is_too_large() {
    let app = spawn_app().await;
    let body = json!({"chat_id": 1, "text": "x".repeat(64 * 1024)}).to_string();
    let resp = post_raw(&app, NOTIFY, body).await;
    assert_problem(resp, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large").await;
    assert_eq!(app.job_count().await, 0);
}

#[tokio::test]
async fn a_body_just_under_the_limit_is_read() {
    let app = spawn_app().await;
    // Valid JSON of about 60 KiB, refused for its text only after it was read and parsed.
    let body = json!({"chat_id": 1, "text": "x".repeat(60 * 1024)});
    let resp = app.post_admin(NOTIFY, &body).send().await.unwrap();
    assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-notification").await;
}

#[tokio::test]
async fn a_chunked_body_without_length_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app().await;
    let body = r#"{"chat_id": 1, "text": "hi"}"#;
    let request = format!(
        "POST {NOTIFY} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 411"), "{answer}");
    assert!(
        answer.to_lowercase().contains("content-type: application/problem+json"),
        "{answer}"
    );
    assert!(answer.contains("urn:paygate:problem:length-required"), "{answer}");
    assert_eq!(app.job_count().await, 0);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_an_unsupported_media_type() {
    let app = spawn_app().await;
    let resp = app
        .client
        .post(app.url(NOTIFY))
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type").await;
    assert_eq!(app.job_count().await, 0);
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_an_invalid_request() {
    let app = spawn_app().await;
    let body = json!({"chat_id": 1, "text": "hi"});
    for key in ["has space", &"k".repeat(201)] {
        let resp = app
            .post_admin(NOTIFY, &body)
            .header("idempotency-key", key)
            .send()
            .await
            .unwrap();
        let problem = assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
        assert!(
            problem["detail"].as_str().unwrap().contains("Idempotency-Key"),
            "{problem}"
        );
    }
    assert_eq!(app.job_count().await, 0);
}

#[tokio::test]
async fn bad_dead_job_filters_are_invalid_requests() {
    let app = spawn_app().await;
    let dead = app.dead_job("notifications", 10.0).await;
    for query in [
        "queue=email",
        "queue=Notifications",
        "limit=-1",
        "limit=0",
        "limit=501",
        "limit=ten",
        "older_than_seconds=-5",
        "newer_than_seconds=-1",
        "before=-3",
    ] {
        let resp = app
            .get_admin(&format!("/v1/ops/jobs/dead?{query}"))
            .send()
            .await
            .unwrap();
        let problem = assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
        if query.starts_with("queue") {
            // The spec's `Queue` enum lists the names; the detail names the parameter.
            let detail = problem["detail"].as_str().unwrap();
            assert!(detail.contains("`queue`"), "names the parameter: {detail}");
        }
    }
    for body in [
        json!({"queue": "email"}),
        json!({"older_than_seconds": -1}),
        json!({"queue": 3}),
        json!({"nope": true}),
    ] {
        for action in ["retry", "discard"] {
            let resp = app
                .post_admin(&format!("/v1/ops/jobs/dead/{action}"), &body)
                .send()
                .await
                .unwrap();
            assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
        }
    }
    assert_eq!(app.state_of(dead).await, "dead", "nothing changed");
}

#[tokio::test]
async fn dead_job_ages_over_100_years_are_invalid_requests_that_say_the_bound() {
    let app = spawn_app().await;
    let dead = app.dead_job("notifications", 10.0).await;
    let bound = jobs::queue::ops::MAX_AGE_SECS;
    assert_eq!(bound, 3_155_760_000, "100 years of 365.25 days");
    for query in [
        "newer_than_seconds=250000000000".to_string(),
        "older_than_seconds=250000000000".to_string(),
        format!("newer_than_seconds={}", bound + 1),
        format!("older_than_seconds={}&queue=notifications", bound + 1),
    ] {
        let resp = app
            .get_admin(&format!("/v1/ops/jobs/dead?{query}"))
            .send()
            .await
            .unwrap();
        let problem = assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(&bound.to_string()), "{query}: says the bound: {detail}");
    }
    for body in [
        json!({"newer_than_seconds": 250_000_000_000_i64}),
        json!({"older_than_seconds": 250_000_000_000_i64}),
        json!({"queue": "notifications", "newer_than_seconds": bound + 1}),
    ] {
        for action in ["retry", "discard"] {
            let resp = app
                .post_admin(&format!("/v1/ops/jobs/dead/{action}"), &body)
                .send()
                .await
                .unwrap();
            let problem = assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
            let detail = problem["detail"].as_str().unwrap();
            assert!(detail.contains(&bound.to_string()), "{body}: says the bound: {detail}");
        }
    }
    assert_eq!(app.state_of(dead).await, "dead", "nothing changed");
    assert_eq!(app.job_count().await, 1, "nothing written");

    // The bound itself is taken, and means what it says.
    let resp = app
        .get_admin(&format!(
            "/v1/ops/jobs/dead?newer_than_seconds={bound}&older_than_seconds=0"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["jobs"][0]["id"], dead);
    let resp = app
        .post_admin("/v1/ops/jobs/dead/retry", &json!({"older_than_seconds": bound}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["count"], 0);
    assert_eq!(app.state_of(dead).await, "dead");
}

#[tokio::test]
async fn a_job_id_that_is_not_an_integer_is_an_invalid_request() {
    let app = spawn_app().await;
    let resp = app.get_admin("/v1/ops/jobs/abc").send().await.unwrap();
    assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
    let resp = app
        .post_admin("/v1/ops/jobs/abc/retry", &json!({}))
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
}

#[tokio::test]
async fn an_unknown_route_is_not_found() {
    let app = spawn_app().await;
    for path in ["/nope", "/v1/ops", "/v1/ops/jobs/1/explode", "/health/x"] {
        let resp = app.get_admin(path).send().await.unwrap();
        assert_problem(resp, StatusCode::NOT_FOUND, "not-found").await;
    }
}

#[tokio::test]
async fn a_wrong_method_is_not_allowed() {
    let app = spawn_app().await;
    let resp = app.client.delete(app.url("/health")).send().await.unwrap();
    assert_problem(resp, StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed").await;
    let resp = app.get_admin(NOTIFY).send().await.unwrap();
    assert_eq!(resp.headers()["allow"], "POST");
    assert_problem(resp, StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed").await;
}

/// Every route of the spec answers every method it does not serve with 405 and an `Allow` of
/// exactly the methods the spec gives it (RFC 9110), `HEAD` going with `GET`.
#[tokio::test]
async fn every_405_says_what_the_route_allows() {
    use reqwest::Method;
    let app = spawn_app().await;
    let spec: Value = serde_json::from_str(api::openapi_json()).unwrap();
    let methods = ["get", "post", "put", "patch", "delete", "options"];
    let mut checked = 0;
    for (template, operations) in spec["paths"].as_object().unwrap() {
        let path = template
            .split('/')
            .map(|s| if s.starts_with('{') { "1" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let mut allowed: Vec<String> = Vec::new();
        for m in ["get", "post", "put", "patch", "delete"] {
            if operations.get(m).is_some() {
                allowed.push(m.to_uppercase());
                if m == "get" {
                    allowed.push("HEAD".into());
                }
            }
        }
        for m in methods.iter().filter(|m| operations.get(**m).is_none()) {
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let resp = app
                .client
                .request(method, app.url(&path))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(
                resp.headers().get("allow").map(|v| v.to_str().unwrap()),
                Some(allowed.join(", ").as_str()),
                "{m} {template}"
            );
            assert_problem(resp, StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed").await;
            checked += 1;
        }
    }
    assert!(checked > 100, "{checked} route and method pairs");
}

#[tokio::test]
async fn a_database_failure_is_an_internal_problem_without_its_cause() {
    let app = spawn_app().await;
    // Breaks the table under the running app: its queries now fail in the database.
    sqlx::query("ALTER TABLE jobs RENAME TO jobs_gone")
        .execute(&app.pool)
        .await
        .unwrap();
    let resp = app.get_admin("/v1/ops/jobs/1").send().await.unwrap();
    let problem: Value = assert_problem(resp, StatusCode::INTERNAL_SERVER_ERROR, "internal").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        !detail.contains("jobs") && !detail.contains("relation"),
        "the cause stays in the logs: {detail}"
    );
}

/// A streamed HTTP/2 body (no `Content-Length`, no chunking: HTTP/2 needs neither) of up to
/// 64 MiB, counting what the server let the client send.
fn http2_stream(total: usize) -> (reqwest::Body, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let sent = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let chunk = vec![b'x'; 16 * 1024];
    let chunks = futures::stream::iter((0..total / chunk.len()).map(move |_| {
        counter.fetch_add(chunk.len(), Ordering::Relaxed);
        Ok::<_, std::io::Error>(chunk.clone())
    }));
    (reqwest::Body::wrap_stream(chunks), sent)
}

fn http2_client() -> reqwest::Client {
    reqwest::Client::builder().http2_prior_knowledge().build().unwrap()
}

#[tokio::test]
async fn a_streamed_http2_body_is_cut_off_at_the_limit() {
    let app = spawn_app().await;
    // A JSON body without end: nothing but the limit stops it before it is parsed.
    let (body, sent) = http2_stream(64 * 1024 * 1024);
    let resp = http2_client()
        .post(app.url("/v1/auth/telegram"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_problem(resp, StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large").await;
    // The server stopped reading at the limit; HTTP/2 flow control stops the client soon after.
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(sent < 8 * 1024 * 1024, "the client could send {sent} bytes");
}

#[tokio::test]
async fn a_streamed_http2_body_under_the_limit_is_read() {
    let app = spawn_app().await;
    let chunks = futures::stream::iter([r#"{"chat_id": 1, "#, r#""text": "over h2"}"#].map(Ok::<_, std::io::Error>));
    let resp = http2_client()
        .post(app.url(NOTIFY))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(app.jobs_of("notifications").await[0].1["text"], "over h2");
}

/// Every text a route stores or looks up: U+0000 anywhere in a JSON body (PostgreSQL's text and
/// jsonb cannot hold it) or `%00` in the path or query is a 400, and nothing is written.
#[tokio::test]
async fn nul_in_any_body_path_or_query_is_an_invalid_request() {
    let app = spawn_app().await;
    let promo_text = json!({"name": "nul", "audience": "all_users", "every_hours": 6,
                            "promos": [{"name": "a", "text": "Go\u{0} Pro", "buttons": [{"text": "Get", "action": "callback"}]}]});
    let promo_name = json!({"name": "nul", "audience": "all_users", "every_hours": 6,
                            "promos": [{"name": "a\u{0}", "text": "Go Pro", "buttons": [{"text": "Get", "action": "callback"}]}]});
    let refund = json!({"provider": "stripe", "payment": "pi_1", "reason": "duplicate\u{0}"});
    let refund_payment = json!({"provider": "stripe", "payment": "pi_\u{0}1"});
    let button = json!({"chat_id": 1, "text": "hi", "buttons": [[{"text": "x\u{0}", "url": "https://e.com"}]]});
    for (path, body) in [
        ("/v1/ops/campaigns", &promo_text),
        ("/v1/ops/campaigns", &promo_name),
        ("/v1/ops/refunds", &refund),
        ("/v1/ops/refunds", &refund_payment),
        (NOTIFY, &button),
    ] {
        let resp = app
            .post_admin(path, body)
            .header("Idempotency-Key", "nul-1")
            .send()
            .await
            .unwrap();
        let problem = assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
        assert!(
            problem["detail"].as_str().unwrap().contains("U+0000"),
            "{path}: {problem}"
        );
    }
    // Media types are case-insensitive: the routes take this one, and so does the check.
    let resp = app
        .client
        .post(app.url("/v1/ops/refunds"))
        .bearer_auth(TOKEN)
        .header("content-type", "Application/JSON; charset=UTF-8")
        .header("Idempotency-Key", "nul-2")
        .body(refund_payment.to_string())
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
    let resp = app
        .post_user("/v1/billing/checkout", 42, &json!({"plan": "pro\u{0}"}))
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
    for path in [
        "/v1/ops/campaigns/a%00b",
        "/v1/ops/campaigns/a%00b/stats",
        "/v1/ops/jobs/dead?queue=notifications%00",
    ] {
        let resp = app.get_admin(path).send().await.unwrap();
        assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
    }
    let resp = app
        .post_admin("/v1/ops/campaigns/a%00b/pause", &json!({}))
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::BAD_REQUEST, "invalid-request").await;
    assert_eq!(app.job_count().await, 0);
    for table in ["campaigns", "refunds", "billing_requests"] {
        assert_eq!(app.count(table).await, 0, "{table}");
    }
}
