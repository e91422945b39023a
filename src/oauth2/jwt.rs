//! Compact JWS signing (RFC 7515) with OpenSSL, for client assertions (private_key_jwt) and
//! Google service-account grants: no JWT crate, one crypto stack.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Padding;
use openssl::sign::{RsaPssSaltlen, Signer};

/// The signature algorithms we produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Alg {
    /// HMAC-SHA256 (tests, shared-key setups).
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256: Microsoft and Google accept it.
    Rs256,
    /// RSASSA-PSS with SHA-256: Microsoft's recommended assertion algorithm.
    Ps256,
}

impl Alg {
    pub fn name(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Rs256 => "RS256",
            Self::Ps256 => "PS256",
        }
    }
}

/// A signing key: the HMAC secret, or an RSA private key.
pub enum Key<'a> {
    Hmac(&'a [u8]),
    Rsa(&'a PKey<Private>),
}

/// `header.claims.signature`. `header` gets `alg` and `typ: JWT` added; the other fields
/// (`kid`, `x5t`) are the caller's.
pub fn sign(
    alg: Alg,
    key: Key<'_>,
    mut header: serde_json::Map<String, serde_json::Value>,
    claims: &serde_json::Value,
) -> Result<String, openssl::error::ErrorStack> {
    header.insert("alg".into(), alg.name().into());
    header.insert("typ".into(), "JWT".into());
    let input = format!(
        "{}.{}",
        B64URL.encode(serde_json::Value::Object(header).to_string()),
        B64URL.encode(claims.to_string())
    );
    let hmac;
    let (pkey, digest) = match key {
        Key::Hmac(secret) => {
            hmac = PKey::hmac(secret)?;
            (&hmac, MessageDigest::sha256())
        }
        Key::Rsa(pkey) => (pkey, MessageDigest::sha256()),
    };
    let mut signer = Signer::new(digest, pkey)?;
    match (alg, key) {
        (Alg::Rs256, Key::Rsa(_)) => signer.set_rsa_padding(Padding::PKCS1)?,
        (Alg::Ps256, Key::Rsa(_)) => {
            signer.set_rsa_padding(Padding::PKCS1_PSS)?;
            signer.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
            signer.set_rsa_mgf1_md(MessageDigest::sha256())?;
        }
        _ => {}
    }
    signer.update(input.as_bytes())?;
    let signature = signer.sign_to_vec()?;
    Ok(format!("{input}.{}", B64URL.encode(signature)))
}

/// base64url of a certificate digest: `x5t` (SHA-1) or `x5t#S256` (SHA-256) of its DER.
pub fn thumbprint(
    cert: &openssl::x509::X509Ref,
    digest: MessageDigest,
) -> Result<String, openssl::error::ErrorStack> {
    Ok(B64URL.encode(cert.digest(digest)?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use openssl::rsa::Rsa;
    use openssl::sign::Verifier;

    fn parts(jwt: &str) -> (serde_json::Value, serde_json::Value, Vec<u8>, String) {
        let p: Vec<&str> = jwt.split('.').collect();
        assert_eq!(p.len(), 3);
        let h = serde_json::from_slice(&B64URL.decode(p[0]).unwrap()).unwrap();
        let c = serde_json::from_slice(&B64URL.decode(p[1]).unwrap()).unwrap();
        (
            h,
            c,
            B64URL.decode(p[2]).unwrap(),
            format!("{}.{}", p[0], p[1]),
        )
    }

    #[test]
    fn hs256_matches_the_rfc_7515_hmac() {
        let claims = serde_json::json!({"sub": "a", "exp": 1});
        let jwt = sign(Alg::Hs256, Key::Hmac(b"k"), Default::default(), &claims).unwrap();
        let (h, c, sig, input) = parts(&jwt);
        assert_eq!(h["alg"], "HS256");
        assert_eq!(h["typ"], "JWT");
        assert_eq!(c, claims);
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"k").unwrap();
        mac.update(input.as_bytes());
        assert_eq!(mac.finalize().into_bytes().to_vec(), sig);
    }

    #[test]
    fn rs256_and_ps256_verify_with_the_public_key() {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        for (alg, padding) in [
            (Alg::Rs256, Padding::PKCS1),
            (Alg::Ps256, Padding::PKCS1_PSS),
        ] {
            let mut header = serde_json::Map::new();
            header.insert("kid".into(), "k1".into());
            let jwt = sign(alg, Key::Rsa(&key), header, &serde_json::json!({"a": 1})).unwrap();
            let (h, _, sig, input) = parts(&jwt);
            assert_eq!(h["alg"], alg.name());
            assert_eq!(h["kid"], "k1");
            let mut v = Verifier::new(MessageDigest::sha256(), &key).unwrap();
            v.set_rsa_padding(padding).unwrap();
            if alg == Alg::Ps256 {
                v.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
            }
            v.update(input.as_bytes()).unwrap();
            assert!(v.verify(&sig).unwrap(), "{alg:?}");
        }
    }
}
