use super::*;
use crate::store::contract;

async fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("state/db.sqlite"))
        .await
        .unwrap();
    (dir, store)
}

#[tokio::test]
async fn contract_receipts_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    {
        let s = SqliteStore::open(&path).await.unwrap();
        contract::record_one_delivery(&s).await;
    }
    let s = SqliteStore::open(&path).await.unwrap();
    contract::assert_one_delivery(&s).await;
}

#[tokio::test]
async fn contract_suite() {
    let (_d, s) = open().await;
    contract::run_all(&s).await;
}

#[tokio::test]
async fn database_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, _s) = open().await;
    let mode = std::fs::metadata(dir.path().join("state/db.sqlite"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
