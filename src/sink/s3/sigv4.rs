//! AWS Signature Version 4 for S3, on our own reqwest client (so OpenSSL stays the only TLS
//! stack). Pure functions: no clock, no I/O; the caller passes the time and the payload hash.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// SHA-256 of the empty body, for GET/HEAD/DELETE.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Keys that sign one request. The secret only ever enters the HMAC.
pub struct SigningKeys<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
}

/// One request as signed: everything that goes into the canonical request.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path exactly as sent, already URI-encoded (see [`encode_path`]).
    pub path: &'a str,
    /// Decoded query pairs; encoded and sorted here.
    pub query: &'a [(&'a str, &'a str)],
    /// Headers to sign (including `host`, `x-amz-date`, `x-amz-content-sha256`).
    pub headers: &'a [(&'a str, &'a str)],
    /// Hex SHA-256 of the body, or `UNSIGNED-PAYLOAD`.
    pub payload_sha256: &'a str,
}

/// RFC 3986 unreserved characters pass; everything else is `%XX` (upper-case), as SigV4 wants.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// An object key as a URL path segment sequence (S3 encodes once, keeping `/`).
pub fn encode_path(key: &str) -> String {
    uri_encode(key, true)
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

pub fn canonical_query(query: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The canonical request and the `SignedHeaders` list.
pub fn canonical_request(req: &Request) -> (String, String) {
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| {
            let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
            (k.to_ascii_lowercase(), v)
        })
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let creq = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        req.path,
        canonical_query(req.query),
        canonical_headers,
        signed,
        req.payload_sha256
    );
    (creq, signed)
}

/// The `Authorization` header value. `amz_date` is `YYYYMMDDTHHMMSSZ` (the `x-amz-date` sent).
pub fn authorization(
    keys: &SigningKeys,
    region: &str,
    service: &str,
    amz_date: &str,
    req: &Request,
) -> String {
    let scope = scope(region, service, amz_date);
    let (creq, signed) = canonical_request(req);
    let signature = signature(keys, region, service, amz_date, &creq);
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope},SignedHeaders={signed},Signature={signature}",
        keys.access_key_id
    )
}

/// The credential scope: `YYYYMMDD/region/service/aws4_request`.
pub fn scope(region: &str, service: &str, amz_date: &str) -> String {
    let day = &amz_date[..amz_date.len().min(8)];
    format!("{day}/{region}/{service}/aws4_request")
}

/// The hex signature of a canonical request (for the header form and the query form alike).
pub fn signature(
    keys: &SigningKeys,
    region: &str,
    service: &str,
    amz_date: &str,
    canonical_request: &str,
) -> String {
    let day = &amz_date[..amz_date.len().min(8)];
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{}\n{}",
        scope(region, service, amz_date),
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let k_date = hmac(format!("AWS4{}", keys.secret_access_key).as_bytes(), day);
    let k_region = hmac(&k_date, region);
    let k_service = hmac(&k_region, service);
    let k_signing = hmac(&k_service, "aws4_request");
    hex::encode(hmac(&k_signing, &to_sign))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The examples in AWS's "Signature Calculations for the Authorization Header: Transferring
    // Payload in a Single Chunk" (Amazon S3 API reference).
    const KEYS: SigningKeys = SigningKeys {
        access_key_id: "AKIAIOSFODNN7EXAMPLE",
        secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    };
    const DATE: &str = "20130524T000000Z";

    fn sig(auth: &str) -> &str {
        auth.rsplit("Signature=").next().unwrap()
    }

    #[test]
    fn aws_get_object_example() {
        let req = Request {
            method: "GET",
            path: "/test.txt",
            query: &[],
            headers: &[
                ("Host", "examplebucket.s3.amazonaws.com"),
                ("Range", "bytes=0-9"),
                ("x-amz-content-sha256", EMPTY_SHA256),
                ("x-amz-date", DATE),
            ],
            payload_sha256: EMPTY_SHA256,
        };
        let auth = authorization(&KEYS, "us-east-1", "s3", DATE, &req);
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn aws_put_object_example() {
        let payload = "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072";
        assert_eq!(
            hex::encode(Sha256::digest(b"Welcome to Amazon S3.")),
            payload
        );
        let path = encode_path("/test$file.text");
        assert_eq!(path, "/test%24file.text");
        let req = Request {
            method: "PUT",
            path: &path,
            query: &[],
            headers: &[
                ("Host", "examplebucket.s3.amazonaws.com"),
                ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
                ("x-amz-date", DATE),
                ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
                ("x-amz-content-sha256", payload),
            ],
            payload_sha256: payload,
        };
        let auth = authorization(&KEYS, "us-east-1", "s3", DATE, &req);
        assert_eq!(
            sig(&auth),
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );
        assert!(auth.contains(
            "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class"
        ));
    }

    #[test]
    fn aws_get_bucket_lifecycle_and_list_objects_examples() {
        let headers = [
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-date", DATE),
            ("x-amz-content-sha256", EMPTY_SHA256),
        ];
        let req = Request {
            method: "GET",
            path: "/",
            query: &[("lifecycle", "")],
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        assert_eq!(
            sig(&authorization(&KEYS, "us-east-1", "s3", DATE, &req)),
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
        );
        let req = Request {
            method: "GET",
            path: "/",
            query: &[("prefix", "J"), ("max-keys", "2")],
            headers: &headers,
            payload_sha256: EMPTY_SHA256,
        };
        assert_eq!(
            sig(&authorization(&KEYS, "us-east-1", "s3", DATE, &req)),
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
    }

    #[test]
    fn encoding_keeps_unreserved_and_escapes_the_rest() {
        assert_eq!(uri_encode("a b+c/d~e", false), "a%20b%2Bc%2Fd~e");
        assert_eq!(encode_path("/x/ü y"), "/x/%C3%BC%20y");
    }
}
