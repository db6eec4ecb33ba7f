//! The deploy files agree with each other and with the README: `app.json` (Heroku Button) asks
//! for every variable the README's configuration table lists, except those the platform sets;
//! the buildpack's build (`RustConfig`) builds every binary the Procfile runs, and nothing else;
//! `app.json`'s formation is the Procfile's long-running processes.

use std::collections::BTreeSet;

use serde_json::Value;

/// Variables the README lists that an operator does not set on Heroku: the platform and the
/// Postgres add-on set them, or they point at local fakes and files.
const NOT_ASKED_FOR: [&str; 8] = [
    "DATABASE_URL",
    "PORT",
    "DYNO",
    "HOST",
    "PLANS_FILE",
    "BOT_TEXTS_FILE",
    "STRIPE_API_URL",
    "TELEGRAM_API_URL",
];

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The variables of the README's configuration table: its rows' first cells.
fn readme_variables() -> BTreeSet<String> {
    let readme = read("README.md");
    let table = readme
        .split("## Configuration")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Configuration section");
    table
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .flat_map(|row| {
            let cell = row.split(" |").next().unwrap_or_default();
            cell.split(", ")
                .map(|v| v.trim_matches('`').to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// (process, binary) of every Procfile line.
fn procfile() -> Vec<(String, String)> {
    read("Procfile")
        .lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(process, command)| {
            let binary = command
                .split_whitespace()
                .next()
                .and_then(|c| c.strip_prefix("./target/release/"))
                .unwrap_or_else(|| panic!("{process} runs a release binary: {command}"));
            (process.to_string(), binary.to_string())
        })
        .collect()
}

#[test]
fn app_json_asks_for_every_variable_the_readme_lists_that_the_platform_does_not_set() {
    let app: Value = serde_json::from_str(&read("app.json")).expect("app.json is JSON");
    let asked: BTreeSet<String> = app["env"].as_object().unwrap().keys().cloned().collect();
    let mut listed = readme_variables();
    assert!(listed.len() > 20, "{listed:?}");
    for var in NOT_ASKED_FOR {
        assert!(listed.remove(var), "{var} is in the README");
    }
    assert_eq!(asked, listed);
    for (var, spec) in app["env"].as_object().unwrap() {
        assert!(spec["description"].as_str().is_some_and(|d| !d.is_empty()), "{var}");
        // A generated secret is never a value everyone shares.
        assert!(spec.get("generator").is_none() || spec.get("value").is_none(), "{var}");
    }
    let plans = app["env"]["PLANS"]["value"].as_str().unwrap();
    jobs::billing::Plans::parse(plans).expect("the example catalogue is valid");
    assert_eq!(app["addons"][0]["plan"], "heroku-postgresql:essential-0");
}

#[test]
fn the_buildpack_builds_what_the_procfile_runs_and_the_formation_runs_the_rest() {
    let config = read("RustConfig");
    let flags = config
        .lines()
        .find_map(|l| l.strip_prefix("RUST_CARGO_BUILD_FLAGS="))
        .expect("RustConfig sets the build flags")
        .trim_matches('"');
    let words: Vec<&str> = flags.split_whitespace().collect();
    assert_eq!(words[0], "--release");
    let built: BTreeSet<String> = words
        .windows(2)
        .filter(|w| w[0] == "-p")
        .map(|w| w[1].to_string())
        .collect();
    let processes = procfile();
    // Every binary is its package's only one, of the same name.
    let run: BTreeSet<String> = processes.iter().map(|(_, binary)| binary.clone()).collect();
    assert_eq!(built, run);
    let app: Value = serde_json::from_str(&read("app.json")).unwrap();
    let formation: BTreeSet<String> = app["formation"].as_object().unwrap().keys().cloned().collect();
    let long_running: BTreeSet<String> = processes
        .into_iter()
        .map(|(process, _)| process)
        .filter(|p| p != "release")
        .collect();
    assert_eq!(formation, long_running);
}

#[test]
fn the_pinned_toolchain_is_at_least_the_workspace_rust_version() {
    let pinned = read("rust-toolchain");
    let version = |v: &str| -> Vec<u32> { v.trim().split('.').map(|n| n.parse().unwrap()).collect() };
    let manifest = read("Cargo.toml");
    let minimum = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    assert!(version(&pinned) >= version(minimum), "{pinned} < {minimum}");
}
