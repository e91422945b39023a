//! A local S3 server for `bench/s3.sh` and manual trials: s3s-fs (the dev-dependency the tests
//! use) over a directory, SigV4 checked with fixed keys.
//!
//! Usage: `cargo run --release --example s3_server -- ROOT PORT ACCESS_KEY SECRET_KEY BUCKET`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, port, access, secret, bucket] = args.as_slice() else {
        eprintln!("usage: s3_server ROOT PORT ACCESS_KEY SECRET_KEY BUCKET");
        std::process::exit(2);
    };
    std::fs::create_dir_all(std::path::Path::new(root).join(bucket)).expect("create bucket");
    let mut b = S3ServiceBuilder::new(s3s_fs::FileSystem::new(root).expect("open root"));
    b.set_auth(SimpleAuth::from_single(access.as_str(), secret.as_str()));
    let service = b.build();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>().expect("port")))
        .await
        .expect("bind");
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
}
