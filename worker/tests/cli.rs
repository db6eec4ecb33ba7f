//! The worker binary as ops and the platform run it.

use std::process::Command;

fn worker() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_worker"));
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

#[test]
fn a_missing_variable_stops_start_up_with_one_line_naming_it() {
    let out = worker().arg("run").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim(), "worker: configuration error: DATABASE_URL is not set");
}

#[test]
fn a_malformed_variable_is_named_too() {
    let out = worker()
        .arg("run")
        .env("DATABASE_URL", "postgres://nowhere/x")
        .env("TELEGRAM_BOT_TOKEN", "1:x")
        .env("WORKER_CONCURRENCY", "lots")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(
        stderr
            .trim()
            .starts_with("worker: configuration error: WORKER_CONCURRENCY is malformed"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1);
}

#[tokio::test]
async fn migrate_is_idempotent_and_jobs_commands_work_on_an_empty_database() {
    let url = sandbox::postgres::test_database().await;
    for _ in 0..2 {
        let out = worker().arg("migrate").env("DATABASE_URL", &url).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = worker()
        .args(["jobs", "stats"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert_eq!(stdout.lines().count(), 7, "a header and six queues:\n{stdout}");
    let out = worker()
        .args(["jobs", "retry", "12345"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(String::from_utf8(out.stderr).unwrap().trim(), "worker: no job 12345");
    let out = worker()
        .args(["jobs", "dead", "--queue", "nope"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unknown queue is refused");
}

#[tokio::test]
async fn ages_over_100_years_are_refused_naming_the_flag_before_the_database_is_asked() {
    let url = sandbox::postgres::test_database().await;
    let out = worker().arg("migrate").env("DATABASE_URL", &url).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let dead: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (queue, logical_key, payload, state, attempt, max_attempts, finished_at)
         VALUES ('notifications', 'test:old', '{}', 'dead', 3, 3, now() - interval '1 hour')
         RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();

    for args in [
        &["jobs", "dead", "--older-than", "100000years"][..],
        &["jobs", "dead", "--newer-than", "101y"],
        &["jobs", "retry", "--all", "--older-than", "100000years"],
        &["jobs", "discard", "--all", "--newer-than", "100000years"],
    ] {
        let out = worker().args(args).env("DATABASE_URL", &url).output().unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(!out.status.success(), "{args:?}");
        let flag = args[args.len() - 2];
        assert!(stderr.contains(flag), "{args:?} names the flag: {stderr}");
        assert!(stderr.contains("at most 100years"), "{args:?} says the bound: {stderr}");
        assert!(
            !stderr.contains("database"),
            "{args:?} is not a database error: {stderr}"
        );
    }
    let state: String = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
        .bind(dead)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(state, "dead", "nothing changed");

    // The bound itself is taken.
    let out = worker()
        .args(["jobs", "dead", "--newer-than", "100years"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8(out.stdout).unwrap().contains("1 dead job(s)"));
}

#[test]
fn an_unreachable_or_malformed_database_url_is_named_with_its_cause() {
    // A port nothing listens on: the cause is the refusal, not the pool's timeout.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (url, cause) in [
        (
            format!("postgres://postgres@127.0.0.1:{closed}/x"),
            "Connection refused",
        ),
        ("not a url".to_string(), "relative URL without a base"),
    ] {
        let out = worker()
            .args(["jobs", "stats"])
            .env("DATABASE_URL", &url)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.starts_with("worker: connecting to the database (DATABASE_URL): ") && stderr.contains(cause),
            "{stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

#[tokio::test]
async fn ops_commands_end_quietly_on_a_closed_pipe_and_say_which_jobs_a_change_applies_to() {
    let url = sandbox::postgres::test_database().await;
    let out = worker().arg("migrate").env("DATABASE_URL", &url).output().unwrap();
    assert!(out.status.success());
    // `worker jobs stats | head -0`: the reader is gone before the first line.
    let mut child = worker()
        .args(["jobs", "stats"])
        .env("DATABASE_URL", &url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");

    let pool = jobs::db::connect(&url, 1).await.unwrap();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO jobs (queue, logical_key, payload, state, max_attempts, finished_at)
         VALUES ('tracking', 'k', '{}', 'completed', 5, now()) RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    for (command, says) in [
        ("discard", "only dead or pending jobs can be discarded"),
        ("retry", "only dead jobs can be retried"),
    ] {
        let out = worker()
            .args(["jobs", command, &id.to_string()])
            .env("DATABASE_URL", &url)
            .output()
            .unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim(), format!("worker: job {id} is completed; {says}"));
    }
}

#[test]
fn version_is_the_crates() {
    let out = worker().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("worker {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Runs `worker <args>` against `url` and returns its stdout; fails on a non-zero exit.
fn ops(url: &str, args: &[&str]) -> String {
    let out = worker().args(args).env("DATABASE_URL", url).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn jobs_in_any_state_are_listed_by_filter_as_a_table_or_json_and_a_paused_queue_shows() {
    let url = sandbox::postgres::test_database().await;
    ops(&url, &["migrate"]);
    let pool = jobs::db::connect(&url, 2).await.unwrap();
    for (key, payload) in [
        ("note:1", r#"{"chat_id": 7, "text": "a"}"#),
        ("note:2", r#"{"chat_id": 8, "text": "b"}"#),
    ] {
        sqlx::query(
            "INSERT INTO jobs (queue, logical_key, payload, max_attempts) VALUES ('notifications', $1, $2::jsonb, 5)",
        )
        .bind(key)
        .bind(payload)
        .execute(&pool)
        .await
        .unwrap();
    }
    let listed: serde_json::Value =
        serde_json::from_str(&ops(&url, &["jobs", "list", "--state", "pending", "--format", "json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let id = listed[0]["id"].to_string();
    let shown = ops(&url, &["jobs", "show", &id]);
    assert!(shown.starts_with(&format!("job          {id}\n")), "{shown}");
    assert!(
        shown.contains("\nstate        pending\n") && shown.contains("\nerrors       0\n"),
        "{shown}"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&ops(&url, &["jobs", "show", &id, "--format", "json"])).unwrap();
    assert_eq!(shown["logical_key"], listed[0]["logical_key"], "{shown}");
    let found: serde_json::Value = serde_json::from_str(&ops(
        &url,
        &["jobs", "--format", "json", "list", "--payload", r#"{"chat_id": 8}"#],
    ))
    .unwrap();
    assert_eq!(found[0]["logical_key"], "note:2", "{found}");
    assert_eq!(found.as_array().unwrap().len(), 1);
    let table = ops(&url, &["jobs", "list", "--key", "note:1"]);
    assert_eq!(table.lines().count(), 3, "a header, one job, a count:\n{table}");
    assert!(table.contains("note:1") && table.contains("pending"), "{table}");
    let bad = worker()
        .args(["jobs", "list", "--state", "asleep"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("one of pending, running"));

    assert!(ops(&url, &["jobs", "pause", "notifications"]).contains("paused"));
    let stats: serde_json::Value = serde_json::from_str(&ops(&url, &["jobs", "stats", "--format", "json"])).unwrap();
    let paused: Vec<&str> = stats
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["paused"] == true)
        .map(|q| q["queue"].as_str().unwrap())
        .collect();
    assert_eq!(paused, ["notifications"]);
    assert!(ops(&url, &["jobs", "resume", "notifications"]).contains("resumed"));
    assert_eq!(
        ops(&url, &["jobs", "retry", "--all", "--dry-run"]).trim(),
        "0 job(s) would be retried"
    );
}
