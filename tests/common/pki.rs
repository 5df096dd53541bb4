//! Certificates for tests, made with the `openssl` CLI: a CA and client certificates it signs.

use super::path_str;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs openssl (machine config ignored) with a deadline; panics on failure.
pub fn openssl(dir: &Path, args: &[&str]) {
    let mut child = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .env("OPENSSL_CONF", "/dev/null")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            assert!(status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            return;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("openssl {args:?} timed out");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn p256(dir: &Path, file: &str) {
    openssl(dir, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", file]);
}

pub struct Ca {
    pub dir: PathBuf,
    pub name: String,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let key = format!("{name}-ca.key");
        p256(dir, &key);
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                &key,
                "-out",
                &format!("{name}-ca.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={name} test CA"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
            ],
        );
        Ca { dir: dir.to_owned(), name: name.to_owned() }
    }

    pub fn pem(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// A client certificate with subject `subj` (e.g. `/CN=alice`, or `/O=acme` for no CN) and SANs
    /// (`URI:...`, `DNS:...`); returns (cert, key) paths.
    pub fn client(&self, file: &str, subj: &str, sans: &[&str]) -> (String, String) {
        let dir = &self.dir;
        let (key, csr, ext, cert) =
            (format!("{file}.key"), format!("{file}.csr"), format!("{file}.ext"), format!("{file}.pem"));
        p256(dir, &key);
        openssl(dir, &["req", "-new", "-key", &key, "-subj", subj, "-out", &csr]);
        let mut e =
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n".to_string();
        if !sans.is_empty() {
            e.push_str(&format!("subjectAltName={}\n", sans.join(",")));
        }
        std::fs::write(dir.join(&ext), e).unwrap();
        let (ca_pem, ca_key) = (format!("{}-ca.pem", self.name), format!("{}-ca.key", self.name));
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_pem,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
        );
        (path_str(&dir.join(cert)), path_str(&dir.join(key)))
    }
}
