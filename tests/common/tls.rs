//! A throwaway CA and a server certificate for 127.0.0.1 (openssl CLI), for registries
//! served over TLS in the push and deploy tests.

use super::run_checked;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ocilambda-tls-")
        .tempdir()
        .unwrap()
}

pub fn openssl(args: &[&str], dir: &Path) {
    let mut cmd = Command::new("openssl");
    cmd.args(args).current_dir(dir);
    run_checked(cmd);
}

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it.
pub struct Tls {
    pub dir: tempfile::TempDir,
}

impl Tls {
    pub fn new() -> Tls {
        let dir = tempdir();
        let d = dir.path();
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=ocilambda test CA",
            ],
            d,
        );
        openssl(
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
            d,
        );
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            &[
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
                "ext.cnf",
            ],
            d,
        );
        Tls { dir }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        let d = self.dir.path();
        vec![
            (
                "REGISTRY_HTTP_TLS_CERTIFICATE",
                d.join("server.pem").display().to_string(),
            ),
            (
                "REGISTRY_HTTP_TLS_KEY",
                d.join("server.key").display().to_string(),
            ),
        ]
    }
}
