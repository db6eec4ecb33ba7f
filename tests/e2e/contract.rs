//! The contract, tried as a generated client's author would, with the Python tools people use
//! (from PyPI, pinned, in a virtualenv under the target directory):
//! - schemathesis runs every check it has over the whole spec against the running api, with the
//!   admin token and with a user token, and finds nothing; `tests/contract/schemathesis.toml`
//!   lists the few refusals the schema language cannot express, each with its reason;
//! - openapi-python-client generates a client from `openapi/openapi.json`, and
//!   `tests/contract/flow.py` runs the whole flow with it, unmodified.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e::{ADMIN_TOKEN, World};
use sandbox::telegram::Limits;

/// The tools the tests use, as pip installs them.
const TOOLS: [&str; 2] = ["schemathesis==4.32.5", "openapi-python-client==0.29.1"];

/// Examples per operation and phase.
const EXAMPLES: &str = "60";

/// A virtualenv under the target directory holding [`TOOLS`], made on first use (it needs
/// `python3` with `venv`, and PyPI) and reused after; its `bin/`.
fn tools() -> PathBuf {
    // The tests of this binary run at once and share the one virtualenv: one makes it, the
    // others wait for it.
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = MAKING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("contract-tools");
    let installed = dir.join("installed");
    let runs = || {
        Command::new(dir.join("bin/python"))
            .args(["-c", ""])
            .status()
            .is_ok_and(|s| s.success())
    };
    if std::fs::read_to_string(&installed).is_ok_and(|t| t == TOOLS.join(" ")) && runs() {
        return dir.join("bin");
    }
    let venv = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&dir)
        .status()
        .expect("python3 runs (it is needed for the contract tests)");
    assert!(venv.success(), "python3 -m venv {}", dir.display());
    let pip = Command::new(dir.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(TOOLS)
        .status()
        .expect("pip runs");
    assert!(pip.success(), "pip install {TOOLS:?}");
    std::fs::write(&installed, TOOLS.join(" ")).unwrap();
    dir.join("bin")
}

/// Runs every check over the spec at `api` with `authorization`; panics with the report unless
/// it found nothing.
fn run(bin: &Path, api: &str, who: &str, authorization: &str) {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("contract/schemathesis.toml");
    let out = Command::new(bin.join("st"))
        // It keeps a cache in its working directory.
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{api}/openapi.json"), "--checks", "all"])
        .args(["--max-examples", EXAMPLES, "--generation-deterministic", "--no-color"])
        .args(["--header", &format!("Authorization: {authorization}")])
        .output()
        .expect("st runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures as {who}:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It ran the cases, rather than stopping on the spec or the config.
    assert!(
        report.contains(" generated, ") && !report.contains("FAILURES"),
        "as {who}:\n{report}"
    );
}

#[tokio::test]
async fn schemathesis_finds_nothing_over_the_whole_spec() {
    let bin = tokio::task::spawn_blocking(tools).await.unwrap();
    let world = World::new(Limits::default()).await;
    let api = world.start_api().await;
    let user = api::auth::issue_user_token(&world.jwt(), 42, chrono::Utc::now());
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let user = format!("Bearer {user}");
    tokio::task::spawn_blocking(move || {
        run(&bin, &api, "an operator", &admin);
        run(&bin, &api, "a user", &user);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_generated_python_client_runs_the_whole_flow_unmodified() {
    let bin = tokio::task::spawn_blocking(tools).await.unwrap();
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-client");
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json");
    let generated = Command::new(bin.join("openapi-python-client"))
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .args(["generate", "--overwrite", "--meta", "none", "--output-path"])
        // Without packaging metadata the output is the package itself.
        .arg(out_dir.join("paygate_client"))
        .arg("--path")
        .arg(&spec)
        .output()
        .expect("openapi-python-client runs");
    let said = String::from_utf8_lossy(&generated.stdout).to_string() + &String::from_utf8_lossy(&generated.stderr);
    assert!(generated.status.success(), "{said}");
    // Its only warnings may be that ruff, its formatter, is not installed.
    let warnings: Vec<&str> = said
        .lines()
        .filter(|l| {
            !l.trim().is_empty()
                && !l.starts_with("Generating")
                && !l.contains("ruff")
                && !l.contains("Skipping Integration")
                && !l.contains("Warning(s) encountered")
                && !l.contains("please open an issue")
        })
        .collect();
    assert!(warnings.is_empty(), "the generator left something out:\n{said}");

    let world = World::new(Limits::default()).await;
    let api = world.start_api_receiving_stripe().await;
    let user = 7171;
    // A notification that exhausted its attempts, for the client to find and retry.
    let dead = world
        .notify("py-dead-1", user, "Your receipt")
        .await
        .id()
        .expect("a new job");
    world.exhaust(dead).await;
    let worker = world.start_worker(world.worker_config(30.0));
    let init_data = e2e::init_data_for(&serde_json::json!({"id": user, "first_name": "Ada"}));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("contract/flow.py");
    let mut flow = Command::new(bin.join("python"));
    flow.arg(&script)
        .env("PYTHONPATH", &out_dir)
        .env("PAYGATE_API", &api)
        .env("PAYGATE_USER", user.to_string())
        .env("PAYGATE_DEAD_JOB", dead.to_string())
        .env("PAYGATE_INIT_DATA", init_data)
        .env("PAYGATE_ADMIN_TOKEN", ADMIN_TOKEN);
    let ran = tokio::task::spawn_blocking(move || flow.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        ran.status.success(),
        "{}{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    world
        .wait_for_count(
            "SELECT count(*) FROM telegram_deliveries WHERE chat_id = 7171",
            5,
            Duration::from_secs(20),
        )
        .await;
    worker.stop().await;
    let told = world.telegram.texts_to(user);
    for text in [
        "Pro access is active until",
        "Hello from Python",
        "Pro, now in Python",
        "Your receipt",
        "refunded",
    ] {
        assert!(told.iter().any(|t| t.contains(text)), "{text} in {told:?}");
    }
}
