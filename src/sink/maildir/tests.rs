use super::*;
use crate::key::IdempotencyKey;
use crate::sink::{Sink, SpooledMessage};

fn message(dir: &std::path::Path, body: &[u8]) -> SpooledMessage {
    let path = dir.join("spooled");
    std::fs::write(&path, body).unwrap();
    SpooledMessage {
        mailbox: "alice".into(),
        uidl: "u1".into(),
        path,
        size: body.len() as u64,
        sha256: String::new(),
        fetched_at: chrono::Utc::now(),
        seen_before: false,
        owner: Default::default(),
        params: Default::default(),
    }
}

fn sink(root: &std::path::Path) -> MaildirSink {
    MaildirSink::new(
        "archive",
        MaildirSettings {
            path: root.join("mail/{mailbox}").to_string_lossy().into_owned(),
            fsync: true,
        },
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn delivers_bytes_unchanged_into_new() {
    let tmp = tempfile::tempdir().unwrap();
    let body = b"Subject: x\r\n\r\n.leading dot\r\n\x00\xff binary\r\n";
    let m = message(tmp.path(), body);
    let key = IdempotencyKey::derive("alice", "u1");
    let r = sink(tmp.path()).deliver(&m, &key).await.unwrap();
    assert!(!r.duplicate);
    let file = tmp.path().join("mail/alice/new").join(key.as_str());
    assert_eq!(std::fs::read(&file).unwrap(), body);
    assert_eq!(
        std::fs::read_dir(tmp.path().join("mail/alice/tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn repeat_delivery_is_a_no_op_even_after_the_mua_moved_it() {
    let tmp = tempfile::tempdir().unwrap();
    let m = message(tmp.path(), b"Subject: x\r\n\r\nhi\r\n");
    let key = IdempotencyKey::derive("alice", "u1");
    let s = sink(tmp.path());
    s.deliver(&m, &key).await.unwrap();
    assert!(s.deliver(&m, &key).await.unwrap().duplicate);
    let maildir = tmp.path().join("mail/alice");
    std::fs::rename(
        maildir.join("new").join(key.as_str()),
        maildir.join("cur").join(format!("{}:2,S", key.as_str())),
    )
    .unwrap();
    assert!(s.deliver(&m, &key).await.unwrap().duplicate);
    let files = std::fs::read_dir(maildir.join("new")).unwrap().count()
        + std::fs::read_dir(maildir.join("cur")).unwrap().count();
    assert_eq!(files, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn unwritable_target_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    // A regular file where the Maildir should be.
    std::fs::create_dir_all(tmp.path().join("mail")).unwrap();
    std::fs::write(tmp.path().join("mail/alice"), b"").unwrap();
    let m = message(tmp.path(), b"x\r\n");
    let err = sink(tmp.path())
        .deliver(&m, &IdempotencyKey::derive("alice", "u1"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("mail/alice"), "{err}");
}
