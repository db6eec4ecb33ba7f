use reqwest::StatusCode;
use serde_json::json;

use std::time::Duration;

use jobs::config::Secret;

use crate::helpers::{TOKEN, assert_problem, now, sample, scrape, spawn_app, spawn_app_with};

// One test for everything the database feeds: the gauges and counters live in the process-wide
// recorder, and apps of other tests in this process publish their own databases' values.
#[tokio::test]
async fn metrics_show_http_traffic_and_the_job_pipeline() {
    let app = spawn_app().await;
    let resp = app
        .post_admin("/v1/ops/notifications", &json!({"chat_id": 7, "text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    app.get("/nope/12345").send().await.unwrap();
    app.get_admin("/v1/ops/jobs/424242").send().await.unwrap();
    sqlx::query(
        "INSERT INTO job_metrics (queue, metric, value) VALUES
           ('notifications', 'processed', 987654), ('notifications', 'dead', 3),
           ('notifications', 'duration_count', 5), ('notifications', 'duration_sum_micros', 2500000),
           ('notifications', 'duration_le_0.1', 2), ('notifications', 'duration_le_1', 4),
           ('notifications', 'duration_le_30', 5)",
    )
    .execute(&app.pool)
    .await
    .unwrap();

    let text = scrape(&app).await;

    let posted = r#"http_requests_total{method="POST",route="/v1/ops/notifications",status="202"}"#;
    assert!(sample(&text, posted).is_some_and(|n| n >= 1.0), "{posted} in\n{text}");
    assert!(
        text.contains(r#"route="unmatched""#),
        "unknown routes are unmatched:\n{text}"
    );
    assert!(!text.contains("12345"), "no path ends up in a label");
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/v1/ops/jobs/{id}",status="404"}"#),
        "{text}"
    );
    assert!(
        text.contains("http_request_duration_seconds_bucket{"),
        "HTTP durations are a histogram:\n{text}"
    );

    assert_eq!(
        sample(&text, r#"paygate_queue_jobs{queue="notifications",state="pending"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"paygate_queue_jobs{queue="refunds",state="dead"}"#),
        Some(0.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            r#"paygate_queue_oldest_pending_age_seconds{queue="notifications"}"#
        )
        .is_some(),
        "{text}"
    );

    assert_eq!(
        sample(&text, r#"paygate_jobs_processed_total{queue="notifications"}"#),
        Some(987654.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"paygate_jobs_dead_total{queue="notifications"}"#),
        Some(3.0),
        "{text}"
    );
    assert!(text.contains("# TYPE paygate_job_duration_seconds histogram"), "{text}");
    for (series, value) in [
        (
            r#"paygate_job_duration_seconds_bucket{queue="notifications",le="0.1"}"#,
            2.0,
        ),
        (
            r#"paygate_job_duration_seconds_bucket{queue="notifications",le="1"}"#,
            4.0,
        ),
        (
            r#"paygate_job_duration_seconds_bucket{queue="notifications",le="+Inf"}"#,
            5.0,
        ),
        (r#"paygate_job_duration_seconds_sum{queue="notifications"}"#, 2.5),
        (r#"paygate_job_duration_seconds_count{queue="notifications"}"#, 5.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
}

#[tokio::test]
async fn metrics_show_the_billing_counters_of_the_database() {
    let app = spawn_app().await;
    sqlx::query(
        "INSERT INTO counters (name, labels, value) VALUES
           ('billing_payments_total', 'provider=\"stripe\",status=\"paid\"', 12),
           ('billing_payments_total', 'provider=\"stripe\",status=\"disputed\"', 2),
           ('billing_refunds_total', 'status=\"succeeded\"', 3)",
    )
    .execute(&app.pool)
    .await
    .unwrap();

    let text = scrape(&app).await;
    for (series, value) in [
        (r#"billing_payments_total{provider="stripe",status="paid"}"#, 12.0),
        (r#"billing_payments_total{provider="stripe",status="disputed"}"#, 2.0),
        (r#"billing_refunds_total{status="succeeded"}"#, 3.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    assert_eq!(
        text.matches("# TYPE billing_payments_total counter\n").count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches("# TYPE billing_refunds_total counter\n").count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("http_requests_total"),
        "the process metrics are still there"
    );
}

#[tokio::test]
async fn new_checkouts_are_counted_by_plan_and_repeats_are_not() {
    let app = spawn_app().await;
    let series = r#"billing_checkout_started_total{plan="pro_yearly"}"#;
    let before = sample(&scrape(&app).await, series).unwrap_or(0.0);
    for _ in 0..2 {
        let resp = app
            .post_user("/v1/billing/checkout", 42, &json!({"plan": "pro_yearly"}))
            .header("Idempotency-Key", "metrics-1")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }
    // Only this test starts pro_yearly checkouts, so the shared recorder moved by ours alone.
    assert_eq!(sample(&scrape(&app).await, series), Some(before + 1.0));
}

#[tokio::test]
async fn metrics_need_the_metrics_token_or_else_the_admin_token() {
    let app = spawn_app().await;
    for resp in [
        app.get("/metrics").send().await.unwrap(),
        app.get("/metrics").bearer_auth("not-the-token").send().await.unwrap(),
        app.get_user("/metrics", 42).send().await.unwrap(),
    ] {
        assert_problem(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    // Without METRICS_TOKEN, the admin token scrapes.
    assert_eq!(app.get_admin("/metrics").send().await.unwrap().status(), StatusCode::OK);

    let metrics_token = "metrics-token-0123456789";
    let app = spawn_app_with(|config| config.metrics_token = Some(Secret::new(metrics_token))).await;
    let resp = app.get("/metrics").bearer_auth(metrics_token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await.unwrap().contains("paygate_queue_jobs"));
    // A scraper's token is not an operator's, nor the other way round.
    assert_problem(
        app.get("/metrics").bearer_auth(TOKEN).send().await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let resp = app
        .get("/v1/ops/jobs/stats")
        .bearer_auth(metrics_token)
        .send()
        .await
        .unwrap();
    assert_problem(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn webhooks_are_answered_while_many_scrapers_wait_on_a_slow_database() {
    // The app has 5 connections. A lock on job_metrics stands in for an aggregate that takes
    // seconds over a big queue: every read of the pipeline's figures blocks on it.
    let app = spawn_app().await;
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE job_metrics IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let scrapers: Vec<_> = (0..50)
        .map(|_| {
            let req = app.get_admin("/metrics");
            tokio::spawn(async move { req.send().await.map(|r| r.status()) })
        })
        .collect();
    // Let the scrapes arrive and queue.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let event = sandbox::stripe_events::Subscription::new("scraped", 42, "pro_monthly", "price_pro_monthly")
        .checkout_session("checkout.session.completed", "paid", now());
    // With a read per scrape, the scrapes hold all five connections until their 5 s read timeout.
    let delivered = tokio::time::timeout(Duration::from_secs(4), app.deliver(&event)).await;
    let delivered = delivered.expect("the webhook is answered while the scrapers wait");
    assert_eq!(delivered.status(), StatusCode::OK);
    lock.rollback().await.unwrap();
    for scraper in scrapers {
        assert_eq!(scraper.await.unwrap().unwrap(), StatusCode::OK);
    }
}

#[tokio::test]
async fn each_worker_process_figures_are_served_while_fresh() {
    let app = spawn_app().await;
    let figures = jobs::metrics::processes::Sample::of_this_process().expect("figures of a Linux process");
    jobs::metrics::processes::record(&app.pool, "worker.1-77-a1b2c3", &figures)
        .await
        .unwrap();
    jobs::metrics::processes::record(&app.pool, "worker.2-88-d4e5f6", &figures)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE worker_processes SET sampled_at = now() - interval '61 seconds' WHERE process LIKE 'worker.2%'",
    )
    .execute(&app.pool)
    .await
    .unwrap();

    let text = scrape(&app).await;
    let rss = sample(
        &text,
        r#"paygate_worker_resident_memory_bytes{process="worker.1-77-a1b2c3"}"#,
    );
    assert_eq!(rss, Some(figures.resident_memory_bytes as f64), "{text}");
    assert!(
        rss.is_some_and(|b| b > 1_000_000.0),
        "a process holds more than a megabyte"
    );
    let cpu = sample(
        &text,
        r#"paygate_worker_cpu_seconds_total{process="worker.1-77-a1b2c3"}"#,
    );
    assert_eq!(cpu, Some(figures.cpu_seconds), "{text}");
    assert!(
        sample(&text, r#"paygate_worker_open_fds{process="worker.1-77-a1b2c3"}"#).is_some_and(|n| n >= 3.0),
        "{text}"
    );
    assert!(
        !text.contains("worker.2-88"),
        "a process silent for a minute has stopped:\n{text}"
    );
    for (family, kind) in [
        ("paygate_worker_cpu_seconds_total", "counter"),
        ("paygate_worker_threads", "gauge"),
        ("paygate_worker_start_time_seconds", "gauge"),
    ] {
        assert_eq!(text.matches(&format!("# TYPE {family} {kind}\n")).count(), 1, "{text}");
        assert_eq!(text.matches(&format!("# HELP {family} ")).count(), 1, "{text}");
    }
}
