//! A private CA and a `localhost` leaf certificate, made with the `openssl` command line.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA certificate (PEM) and its key.
pub struct Ca {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A leaf certificate signed by a [`Ca`], for `DNS:localhost` and `IP:127.0.0.1`.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Runs `openssl` with whitespace-separated `args` (no argument here contains a space).
fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running openssl: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "openssl {args} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC_KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

/// A self-signed CA named `name`, written as `<name>.pem` and `<name>.key` in `dir`.
pub fn make_ca(dir: &Path, name: &str) -> Ca {
    openssl(
        dir,
        &format!(
            "req -x509 {EC_KEY} -days 3650 -keyout {name}.key -out {name}.pem \
             -subj /CN=popbridge-test-CA-{name} \
             -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign"
        ),
    );
    Ca {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    }
}

/// A server certificate for localhost signed by `ca`, as `<name>.pem` / `<name>.key` in `dir`.
pub fn make_leaf(dir: &Path, ca: &Ca, name: &str) -> Leaf {
    std::fs::write(
        dir.join(format!("{name}.ext")),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write extension file");
    openssl(
        dir,
        &format!("req {EC_KEY} -keyout {name}.key -out {name}.csr -subj /CN=localhost"),
    );
    openssl(
        dir,
        &format!(
            "x509 -req -in {name}.csr -CA {} -CAkey {} -CAcreateserial -days 3650 \
             -out {name}.pem -extfile {name}.ext",
            ca.cert.display(),
            ca.key.display()
        ),
    );
    Leaf {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    }
}
