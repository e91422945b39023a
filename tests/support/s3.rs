//! A real S3 server for tests: `s3s-fs` (SigV4 checked, conditional writes, multipart with the
//! 5 MiB minimum part size) served in-process on a loopback port, over a temp directory.

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use popbridge::secret::Secret;
use popbridge::sink::s3::sigv4::{self, SigningKeys, EMPTY_SHA256};
use popbridge::sink::s3::{Credentials, S3Settings};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use std::path::{Path, PathBuf};
use tokio::net::TcpListener;

pub const ACCESS_KEY: &str = "AKIAPOPBRIDGETEST01";
pub const SECRET_KEY: &str = "pb-test-secret/K7MDENG+bPxRfiCY";
pub const BUCKET: &str = "mail";

pub struct S3Server {
    pub port: u16,
    pub url: String,
    pub root: PathBuf,
    _dir: Option<tempfile::TempDir>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback port that is free now (nothing listens on it until `start_on`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl S3Server {
    /// A fresh server with the bucket `mail`.
    pub async fn start() -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Self::start_on(free_port(), dir.path()).await;
        s._dir = Some(dir);
        s
    }

    /// Serves `root` on `port` (the bucket directory is created if missing).
    pub async fn start_on(port: u16, root: &Path) -> S3Server {
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let fs = s3s_fs::FileSystem::new(root).unwrap();
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = b.build();
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let task = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        S3Server {
            port,
            url: format!("http://127.0.0.1:{port}"),
            root: root.to_path_buf(),
            _dir: None,
            task,
        }
    }

    /// Path-style settings for this server with the right keys.
    pub fn settings(&self) -> S3Settings {
        S3Settings::new(
            self.url.parse().unwrap(),
            BUCKET,
            Some(creds(ACCESS_KEY, SECRET_KEY)),
        )
    }

    /// Multipart uploads begun and neither completed nor aborted (s3s-fs keeps one
    /// `.upload-<id>.json` per upload at its root, plus `.upload_id-<id>.part-N` files).
    pub fn leftover_uploads(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(".upload"))
            .collect()
    }

    /// A signed GET (or HEAD), independent of the sink's code paths except the signer.
    pub async fn fetch(
        &self,
        method: &str,
        key: &str,
    ) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let host = format!("127.0.0.1:{}", self.port);
        let path = format!("/{BUCKET}/{}", sigv4::encode_path(key));
        let date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let headers = [
            ("host", host.as_str()),
            ("x-amz-date", date.as_str()),
            ("x-amz-content-sha256", EMPTY_SHA256),
        ];
        let auth = sigv4::authorization(
            &SigningKeys {
                access_key_id: ACCESS_KEY,
                secret_access_key: SECRET_KEY,
            },
            "us-east-1",
            "s3",
            &date,
            &sigv4::Request {
                method,
                path: &path,
                query: &[],
                headers: &headers,
                payload_sha256: EMPTY_SHA256,
            },
        );
        let resp = reqwest::Client::new()
            .request(method.parse().unwrap(), format!("http://{host}{path}"))
            .header("x-amz-date", &date)
            .header("x-amz-content-sha256", EMPTY_SHA256)
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.bytes().await.unwrap().to_vec())
    }

    /// Keys of every object in the bucket (files under the bucket directory).
    pub fn object_keys(&self) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap().to_string_lossy().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root.join(BUCKET), &self.root.join(BUCKET), &mut out);
        out.sort();
        out
    }
}

pub fn creds(id: &str, secret: &str) -> Credentials {
    Credentials {
        access_key_id: id.into(),
        secret_access_key: Secret::new(secret),
        session_token: None,
        expires: None,
    }
}

/// The content of every object in the bucket under `root` (s3s-fs keeps each as a file next
/// to its metadata; ours end in `.eml`).
pub fn objects(root: &Path) -> Vec<Vec<u8>> {
    fn walk(dir: &Path, out: &mut Vec<Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "eml") {
                out.push(std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = Vec::new();
    walk(&root.join(BUCKET), &mut out);
    out
}
