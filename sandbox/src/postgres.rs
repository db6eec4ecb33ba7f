//! Throwaway PostgreSQL clusters for tests, the local run and the benchmark.
//!
//! A cluster lives in a fresh directory under the system temp dir and is stopped and deleted when
//! the process that started it exits, however it exits: the server runs under a small shell guard
//! that waits on a pipe from this process and shuts the server down when the pipe closes. The
//! server refuses to run as root, so when we are root it runs as the `postgres` user.

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::{Connection, Executor, PgConnection};

/// How the throwaway server trades durability for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync and synchronous commit on, as in production: for the benchmark and the local run.
    Production,
    /// fsync off: for tests, where a crashed cluster is simply thrown away.
    Fast,
}

/// TempCluster is a running throwaway PostgreSQL server on 127.0.0.1.
#[derive(Debug)]
pub struct TempCluster {
    port: u16,
    dir: PathBuf,
    // Held open for the life of the process: its closing stops and deletes the cluster.
    _guard_stdin: ChildStdin,
    _guard: Child,
}

impl TempCluster {
    /// Starts a new cluster and waits until it accepts connections.
    pub fn start(durability: Durability) -> anyhow::Result<TempCluster> {
        let bin = postgres_bindir()?;
        let owner = server_owner()?;
        let dir = std::env::temp_dir().join(format!("paygate-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if let Some((uid, gid)) = owner {
            chown(&dir, Some(uid), Some(gid)).context("handing the cluster directory to postgres")?;
        }
        let data = dir.join("data");

        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "-D",
            ])
            .arg(&data);
        run_as(&mut initdb, owner);
        let out = initdb.output().context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }

        let port = free_port()?;
        let mut settings = vec![
            "-c listen_addresses=127.0.0.1".to_string(),
            format!("-c unix_socket_directories={}", dir.display()),
            "-c max_connections=400".into(),
            "-c shared_buffers=256MB".into(),
        ];
        if durability == Durability::Fast {
            settings.extend([
                "-c fsync=off".into(),
                "-c synchronous_commit=off".into(),
                "-c full_page_writes=off".into(),
            ]);
        }
        let script = format!(
            "'{postgres}' -D '{data}' -p {port} {settings} >'{dir}/log' 2>&1 & pid=$!\n\
             read _ignored\n\
             kill -INT $pid; wait $pid; rm -rf '{dir}'",
            postgres = bin.join("postgres").display(),
            data = data.display(),
            dir = dir.display(),
            settings = settings.join(" "),
        );
        let mut guard = Command::new("sh");
        guard
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // The guard must outlive a Ctrl-C of the dev runner long enough to clean up.
        guard.process_group(0);
        run_as(&mut guard, owner);
        let mut guard = guard.spawn().context("starting postgres")?;
        let guard_stdin = guard.stdin.take().expect("piped stdin");

        let cluster = TempCluster {
            port,
            dir,
            _guard_stdin: guard_stdin,
            _guard: guard,
        };
        cluster.wait_ready(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// The URL of database `db` on this cluster, as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                // The port opens a moment before the server accepts logins; pg_isready knows.
                let ok = Command::new(postgres_bindir()?.join("pg_isready"))
                    .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if ok {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let mut log = String::new();
                let _ = std::fs::File::open(self.dir.join("log")).and_then(|mut f| f.read_to_string(&mut log));
                bail!("postgres did not start within {timeout:?}; its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The directory holding `initdb` and `postgres`: the one on PATH, else Debian's newest.
fn postgres_bindir() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("postgres").is_file() && dir.join("pg_isready").is_file() {
                return Ok(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "no PostgreSQL server binaries found (install them: apt-get install -y postgresql), or set DATABASE_URL"
        ),
    }
}

/// The uid and gid to run the server as: `postgres` when we are root, ourselves otherwise.
fn server_owner() -> anyhow::Result<Option<(u32, u32)>> {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")?;
    if !is_root {
        return Ok(None);
    }
    let id = |flag: &str| -> anyhow::Result<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output()?;
        if !out.status.success() {
            bail!("running as root needs a `postgres` user to own the throwaway cluster");
        }
        Ok(String::from_utf8(out.stdout)?.trim().parse()?)
    };
    Ok(Some((id("-u")?, id("-g")?)))
}

fn run_as(cmd: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid).current_dir("/");
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The server every test database of this process lives on: `DATABASE_URL`'s when it is set,
/// else a throwaway cluster started on first use and removed when the process exits.
fn test_server_url() -> &'static str {
    static SERVER: OnceLock<(Option<TempCluster>, String)> = OnceLock::new();
    &SERVER
        .get_or_init(|| match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => (None, url),
            _ => {
                let cluster =
                    TempCluster::start(Durability::Fast).expect("starting a throwaway PostgreSQL for the tests");
                let url = cluster.url("postgres");
                (Some(cluster), url)
            }
        })
        .1
}

/// Creates a new, empty, fully migrated database for one test and returns its URL.
///
/// Databases are cloned from a template migrated once per process, which is much faster than
/// migrating each one. They are not dropped: a throwaway cluster goes away with the process, and
/// on a `DATABASE_URL` server the `t_…` databases are left for inspection.
pub async fn test_database() -> String {
    static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    let server = test_server_url();
    let template = TEMPLATE
        .get_or_init(|| async {
            let name = format!("tpl_{}", uuid::Uuid::new_v4().simple());
            create_database(server, &name, None).await;
            let url = with_database(server, &name);
            // A connection of its own: the pools of tests live in other runtimes.
            let mut conn = PgConnection::connect(&url)
                .await
                .expect("connecting to the template database");
            sqlx::migrate!("../migrations")
                .run(&mut conn)
                .await
                .expect("migrating the template database");
            conn.close().await.expect("closing the template connection");
            name
        })
        .await;
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    create_database(server, &name, Some(template)).await;
    with_database(server, &name)
}

async fn create_database(server: &str, name: &str, template: Option<&str>) {
    let mut conn = PgConnection::connect(server)
        .await
        .expect("connecting to the test server");
    let sql = match template {
        Some(t) => format!("CREATE DATABASE {name} TEMPLATE {t}"),
        None => format!("CREATE DATABASE {name}"),
    };
    conn.execute(sqlx::AssertSqlSafe(sql))
        .await
        .expect("creating a test database");
    conn.close().await.ok();
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    // postgres://user@host:port/dbname: the database is the last path segment after the authority.
    let authority_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn with_database_replaces_only_the_database_name() {
        assert_eq!(with_database("postgres://u:p@h:5/app", "t_1"), "postgres://u:p@h:5/t_1");
        assert_eq!(
            with_database("postgres://u@h/app?sslmode=require", "x"),
            "postgres://u@h/x?sslmode=require"
        );
        assert_eq!(with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
    }
}
