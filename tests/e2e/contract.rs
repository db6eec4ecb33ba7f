//! The contract, tried as a generated client's author would: schemathesis (from PyPI, pinned)
//! runs every check it has over the whole spec against the running api, with the admin token
//! and with a user token, and finds nothing. `tests/contract/schemathesis.toml` lists the few
//! refusals the schema language cannot express, each with its reason.

use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::{ADMIN_TOKEN, World};
use sandbox::telegram::Limits;

/// The schemathesis the run uses, as pip installs it.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// Examples per operation and phase.
const EXAMPLES: &str = "60";

/// The `st` of a virtualenv under the target directory, made on first use (it needs `python3`
/// with `venv` and PyPI) and reused after.
fn schemathesis() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(SCHEMATHESIS.replace("==", "-"));
    let st = dir.join("bin/st");
    let installed = dir.join("installed");
    if installed.exists() {
        return st;
    }
    let venv = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&dir)
        .status()
        .expect("python3 runs (it is needed for the contract test)");
    assert!(venv.success(), "python3 -m venv {}", dir.display());
    let pip = Command::new(dir.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", SCHEMATHESIS])
        .status()
        .expect("pip runs");
    assert!(pip.success(), "pip install {SCHEMATHESIS}");
    std::fs::write(&installed, SCHEMATHESIS).unwrap();
    st
}

/// Runs every check over the spec at `api` with `authorization`; panics with the report unless
/// it found nothing.
fn run(st: &Path, api: &str, who: &str, authorization: &str) {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("contract/schemathesis.toml");
    let out = Command::new(st)
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
    let st = tokio::task::spawn_blocking(schemathesis).await.unwrap();
    let world = World::new(Limits::default()).await;
    let api = world.start_api().await;
    let user = api::auth::issue_user_token(&world.jwt(), 42, chrono::Utc::now());
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let user = format!("Bearer {user}");
    tokio::task::spawn_blocking(move || {
        run(&st, &api, "an operator", &admin);
        run(&st, &api, "a user", &user);
    })
    .await
    .unwrap();
}
