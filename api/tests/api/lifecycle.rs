//! Start-up and shutdown of the process.

use std::process::Command;
use std::time::Duration;

use api::Application;
use reqwest::StatusCode;

use crate::helpers::config;

/// Runs the `api` binary with exactly `vars` in its environment.
fn run_binary(vars: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_api"));
    cmd.env_clear();
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("running the api binary")
}

#[test]
fn a_bad_configuration_stops_the_process_with_one_line() {
    let url = ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none");
    let token = ("ADMIN_TOKEN", "0123456789abcdef");
    let plans = ("PLANS", crate::helpers::PLANS);
    let whsec = ("STRIPE_WEBHOOK_SECRET", "whsec_abc");
    let cases: [(&[(&str, &str)], &str); 11] = [
        (&[token], "configuration error: DATABASE_URL is not set\n"),
        (&[url], "configuration error: ADMIN_TOKEN is not set\n"),
        (
            &[url, ("ADMIN_TOKEN", "short")],
            "configuration error: ADMIN_TOKEN is too short (at least 16 characters)\n",
        ),
        (
            &[url, token, ("PORT", "eighty")],
            "configuration error: PORT is malformed (invalid digit found in string): \"eighty\"\n",
        ),
        (
            &[url, token, ("DATABASE_POOL_SIZE", "0")],
            "configuration error: DATABASE_POOL_SIZE must be at least 2 (one is the LISTEN for settled billing requests)\n",
        ),
        (
            &[url, token],
            "configuration error: PLANS is not set (nor is PLANS_FILE)\n",
        ),
        (
            &[url, token, ("PLANS", "{}")],
            "configuration error: PLANS names no plan\n",
        ),
        (
            &[url, token, plans],
            "configuration error: STRIPE_WEBHOOK_SECRET is not set\n",
        ),
        (
            &[url, token, plans, ("STRIPE_WEBHOOK_SECRET", "whsec_abc,sk_live_abc")],
            "configuration error: STRIPE_WEBHOOK_SECRET is malformed: secret 2 of the list is not a webhook \
             signing secret (whsec_…)\n",
        ),
        (
            &[url, token, plans, whsec],
            "configuration error: JWT_SECRET is not set\n",
        ),
        (
            &[url, token, plans, whsec, ("JWT_SECRET", "too-short")],
            "configuration error: JWT_SECRET is too short (at least 32 characters)\n",
        ),
    ];
    for (vars, line) in cases {
        let out = run_binary(vars);
        assert_eq!(out.status.code(), Some(1), "{vars:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), line, "{vars:?}");
        assert!(out.stdout.is_empty());
    }
}

#[tokio::test]
async fn the_server_stops_when_told_and_refuses_new_connections() {
    let db_url = sandbox::postgres::test_database().await;
    let app = Application::build(config(&db_url)).await.unwrap();
    let url = format!("http://127.0.0.1:{}/health", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    assert_eq!(client.get(&url).send().await.unwrap().status(), StatusCode::OK);

    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the server stops")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        reqwest::Client::new().get(&url).send().await.is_err(),
        "no longer accepting"
    );
}
