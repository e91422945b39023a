use crate::config::{load_str_with_env, SinkKind};
use std::path::Path;

const BASE: &str = "state:\n  path: /tmp/pb.db\nmailboxes:\n  - name: a\n    pop3:\n      host: h\n      username: u\n      password: p\n    schedule: { every: 60s }\n    sinks: [archive]\nsinks:\n  - name: archive\n    type: s3\n";

fn load(extra: &str) -> Result<crate::config::Loaded, crate::config::ConfigError> {
    load_str_with_env(
        &format!("{BASE}{extra}"),
        Path::new("/etc/popbridge/config.yaml"),
        |name| match name {
            "S3_SECRET" => Some("sekrit-s3-key".into()),
            _ => None,
        },
    )
}

#[test]
fn s3_sink_loads_with_defaults_and_secret_from_the_environment() {
    let loaded = load(
        "    bucket: mail-archive\n    region: eu-west-1\n    access_key_id: AKIDEXAMPLE\n    secret_access_key: ${S3_SECRET}\n    server_side_encryption: aws:kms\n    sse_kms_key_id: alias/mail\n    storage_class: STANDARD_IA\n",
    )
    .unwrap();
    let SinkKind::S3(s) = &loaded.config.sinks[0].kind else {
        panic!("expected an s3 sink")
    };
    assert_eq!(s.endpoint.as_str(), "https://s3.eu-west-1.amazonaws.com/");
    assert!(!s.path_style);
    assert_eq!(s.multipart_threshold, 16 << 20);
    assert_eq!(s.part_size, 8 << 20);
    assert_eq!(s.sse, Some(super::Sse::Kms));
    let c = s.credentials.as_ref().unwrap();
    assert_eq!(c.secret_access_key.expose(), "sekrit-s3-key");
    let debug = format!("{:?}", loaded.config);
    assert!(!debug.contains("sekrit"), "{debug}");
}

#[test]
fn endpoint_defaults_to_path_style() {
    let loaded =
        load("    bucket: b12\n    endpoint: http://127.0.0.1:9000\n    key: \"{id}.eml\"\n")
            .unwrap();
    let SinkKind::S3(s) = &loaded.config.sinks[0].kind else {
        panic!("expected an s3 sink")
    };
    assert!(s.path_style);
    assert!(s.credentials.is_none());
}

#[test]
fn bad_s3_settings_are_clear_errors() {
    for (extra, want) in [
        ("    bucket: B\n", "valid bucket name"),
        ("    bucket: bbb\n    multipart_threshold: 1000\n", "5 MiB"),
        ("    bucket: bbb\n    part_size: 1000\n", "5 MiB"),
        ("    bucket: bbb\n    key: \"{mailbox}.eml\"\n", "{id}"),
        ("    bucket: bbb\n    access_key_id: AK\n", "go together"),
        ("    bucket: bbb\n    sse_kms_key_id: k\n", "aws:kms"),
        ("    bucket: bbb\n    endpoint: http://h/path\n", "path"),
        (
            "    bucket: bbb\n    server_side_encryption: DES\n",
            "unknown variant",
        ),
        ("    bucket: bbb\n    acl: private\n", "unknown field `acl`"),
    ] {
        let err = load(extra).unwrap_err().to_string();
        assert!(err.contains(want), "{extra}: {err}");
    }
}

#[test]
fn plain_http_endpoint_off_this_machine_is_refused_unless_allowed() {
    let err = load("    bucket: bbb\n    endpoint: http://minio.internal:9000\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sinks[archive]") && err.contains("allow_plaintext: true"),
        "{err}"
    );
    let loaded = load(
        "    bucket: bbb\n    endpoint: http://minio.internal:9000\n    allow_plaintext: true\n",
    )
    .unwrap();
    assert!(
        loaded.warnings.iter().any(|w| w
            .starts_with("sinks[archive]: `endpoint` http://minio.internal:9000 is plain http")),
        "{:?}",
        loaded.warnings
    );
    let loaded = load("    bucket: bbb\n    endpoint: http://127.0.0.1:9000\n").unwrap();
    assert!(
        loaded.warnings.iter().any(|w| w.contains("unencrypted")),
        "{:?}",
        loaded.warnings
    );
    assert!(load("    bucket: bbb\n").unwrap().warnings.is_empty());
}
