//! PostgreSQL for the store and fleet tests (tests/store_pg.rs, tests/fleet.rs): one throwaway cluster
//! per test, made with Debian's `initdb` (under /usr/lib/postgresql/<version>/bin, not on PATH) in a
//! temporary directory, run as an unprivileged user (PostgreSQL refuses to run as root, and CI runs as
//! root), listening on 127.0.0.1 only on a free port, its Unix socket inside the directory, password
//! (SCRAM) authentication for everything. Stopped (`-m immediate`) and removed on drop.

use super::{free_port, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The unprivileged user the cluster runs as when the tests run as root.
const TEST_USER: &str = "portcullis-test";
/// The login role and database the gateway uses (not a superuser).
pub const ROLE: &str = "portcullis";
pub const DATABASE: &str = "portcullis";

pub struct PgServer {
    pub port: u16,
    /// The role's password (in `url()`; tests check that it is never printed).
    pub password: String,
    superuser_password: String,
    bin: PathBuf,
    /// `Some(user)`: commands run as this user (we are root).
    run_as: Option<String>,
    dir: TempDir,
    running: bool,
}

/// The newest installed server's bin directory.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (scripts/test.sh installs Debian's `postgresql`)")
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().expect("no /usr/lib/postgresql/<version>/bin/initdb").1
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Makes the test user when missing (root only); tolerates another test making it at the same time.
fn ensure_user() -> String {
    let exists = || {
        Command::new("id")
            .arg(TEST_USER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !exists() {
        let _ = Command::new("useradd")
            .args(["-r", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", TEST_USER])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    assert!(exists(), "could not create the user {TEST_USER}");
    TEST_USER.to_owned()
}

fn random_word() -> String {
    let mut b = [0u8; 12];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl PgServer {
    /// A new cluster with the role and database made, running and answering.
    pub fn start() -> PgServer {
        let bin = bin_dir();
        let run_as = is_root().then(ensure_user);
        let dir = TempDir::new();
        let mut pg = PgServer {
            port: 0,
            password: format!("pw{}", random_word()),
            superuser_password: random_word(),
            bin,
            run_as,
            dir,
            running: false,
        };
        for sub in ["data", "sock"] {
            std::fs::create_dir_all(pg.dir.path(sub)).unwrap();
        }
        let pwfile = pg.dir.write("superuser.pw", &format!("{}\n", pg.superuser_password));
        if let Some(user) = &pg.run_as {
            let status = Command::new("chown").args(["-R", &format!("{user}:")]).arg(&pg.dir.0).status().unwrap();
            assert!(status.success());
        }
        let out = pg.run(
            "initdb",
            &[
                "-D",
                &super::path_str(&pg.dir.path("data")),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                &format!("--pwfile={}", pwfile.display()),
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let _ = std::fs::remove_file(&pwfile);
        pg.start_on_free_port();
        let sql =
            format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{}'; CREATE DATABASE {DATABASE} OWNER {ROLE};", pg.password);
        for stmt in sql.split_inclusive(';') {
            pg.superuser_sql("postgres", stmt);
        }
        pg
    }

    /// `postgres://portcullis:PASSWORD@127.0.0.1:PORT/portcullis`
    pub fn url(&self) -> String {
        format!("postgres://{ROLE}:{}@127.0.0.1:{}/{DATABASE}", self.password, self.port)
    }

    /// The data directory's parent (logs: `server.log`).
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        self.command(tool, args).output().unwrap_or_else(|e| panic!("run {tool}: {e}"))
    }

    fn command(&self, tool: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.args(args).stdin(Stdio::null());
        cmd
    }

    fn pg_ctl_start(&self) -> bool {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=60 -c shared_buffers=16MB",
            self.port,
            super::path_str(&self.dir.path("sock"))
        );
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                &super::path_str(&self.dir.path("data")),
                "-l",
                &super::path_str(&self.dir.path("server.log")),
                "-o",
                &opts,
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        out.status.success()
    }

    fn start_on_free_port(&mut self) {
        for _ in 0..5 {
            self.port = free_port();
            if self.pg_ctl_start() {
                self.running = true;
                return;
            }
        }
        panic!(
            "PostgreSQL did not start:\n{}",
            std::fs::read_to_string(self.dir.path("server.log")).unwrap_or_default()
        );
    }

    /// Turns TLS on with a certificate for `IP:127.0.0.1` issued by a CA made now, and makes TCP logins
    /// TLS-only (`hostssl`; the Unix socket stays for `sql`). Restarts the server. Returns the CA's PEM
    /// file (for `tls: { ca: ... }`).
    pub fn enable_tls(&mut self) -> PathBuf {
        let dir = self.dir.path("tls");
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(&dir).output().expect("run openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=portcullis pg test CA"]);
        ca.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"]);
        openssl(&ca);
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend(["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
        openssl(&csr);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        if let Some(user) = &self.run_as {
            let status = Command::new("chown").args(["-R", &format!("{user}:")]).arg(&dir).status().unwrap();
            assert!(status.success());
        }
        let data = self.dir.path("data");
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str(&format!(
            "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        ));
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        let hba = "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n";
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        self.stop();
        self.start_again();
        dir.join("ca.pem")
    }

    /// Stops the server (fast shutdown): an outage. The data stays.
    pub fn stop(&mut self) {
        let out = self.run("pg_ctl", &["-D", &super::path_str(&self.dir.path("data")), "-m", "fast", "-w", "stop"]);
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
        self.running = false;
    }

    /// Starts it again on the same data and port (waiting for the port to be free).
    pub fn start_again(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.pg_ctl_start() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not restart on port {}:\n{}",
                self.port,
                std::fs::read_to_string(self.dir.path("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        self.running = true;
    }

    /// Runs SQL as the superuser in `db` (over the Unix socket); returns the unaligned, tuples-only output.
    pub fn superuser_sql(&self, db: &str, sql: &str) -> String {
        self.psql("postgres", &self.superuser_password, db, sql)
    }

    /// Runs SQL as the gateway's role in its database.
    pub fn sql(&self, sql: &str) -> String {
        self.psql(ROLE, &self.password, DATABASE, sql)
    }

    fn psql(&self, user: &str, password: &str, db: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let sock = super::path_str(&self.dir.path("sock"));
        let mut cmd = self.command(
            "psql",
            &["-h", &sock, "-p", &port, "-U", user, "-d", db, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
        );
        cmd.env("PGPASSWORD", password);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "psql `{sql}`: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            let _ =
                self.run("pg_ctl", &["-D", &super::path_str(&self.dir.path("data")), "-m", "immediate", "-w", "stop"]);
        }
    }
}
