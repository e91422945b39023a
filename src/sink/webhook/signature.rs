//! Standard Webhooks v1 signatures: `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.

use crate::secret::Secret;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Read;

type HmacSha256 = Hmac<Sha256>;

/// The `webhook-signature` header value: one `v1,<sig>` per key, space-separated (several keys
/// during a rotation). The body is read from `body` in chunks, once for all keys.
///
/// `keys` hold the base64 HMAC key (the part after `whsec_`, see `config::decode_secret`).
pub fn sign(
    keys: &[Secret],
    id: &str,
    timestamp: i64,
    mut body: impl Read,
) -> std::io::Result<String> {
    let mut macs = Vec::with_capacity(keys.len());
    for key in keys {
        let raw = STANDARD
            .decode(key.expose())
            .map_err(|_| std::io::Error::other("signing key is not base64"))?;
        let mut mac = HmacSha256::new_from_slice(&raw)
            .map_err(|_| std::io::Error::other("bad signing key"))?;
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        macs.push(mac);
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = body.read(&mut buf)?;
        if n == 0 {
            break;
        }
        for mac in &mut macs {
            mac.update(&buf[..n]);
        }
    }
    Ok(macs
        .into_iter()
        .map(|m| format!("v1,{}", STANDARD.encode(m.finalize().into_bytes())))
        .collect::<Vec<_>>()
        .join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::webhook::config::decode_secret;

    #[test]
    fn matches_the_standard_webhooks_example() {
        // The example from the Standard Webhooks specification.
        let key = decode_secret(&Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).unwrap();
        let sig = sign(
            &[key],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            &br#"{"test": 2432232314}"#[..],
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn one_signature_per_key_during_rotation() {
        let a = decode_secret(&Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).unwrap();
        let b = decode_secret(&Secret::new("whsec_c2Vjb25kLXNlY3JldC1rZXktZm9yLXRlc3Rz")).unwrap();
        let sig = sign(&[a, b], "id", 1, &b"body"[..]).unwrap();
        let parts: Vec<&str> = sig.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.starts_with("v1,")));
        assert_ne!(parts[0], parts[1]);
    }
}
