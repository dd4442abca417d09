//! Credentials the harness can send, to measure what authentication costs:
//! a bearer JWT on every request (HS256 or ES256, minted once per
//! connection) and a signature on every write (`X-Timestamp`, `X-Nonce`,
//! `X-Signature`: HMAC-SHA256 over the timestamp, nonce, method, path and
//! the body's SHA-256). Without any of the flags nothing here runs.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hyper::header::HeaderValue;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use ring::{digest, hmac};

/// Roles every token carries: enough for each request the harness sends.
pub const ROLES: [&str; 4] = ["reserver", "payment", "receiver", "reader"];
/// Subject of every token.
pub const SUBJECT: &str = "bench";
/// How long a token is valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(3_600);
/// A connection mints a new token once its own is this old.
pub const TOKEN_REFRESH: Duration = Duration::from_secs(1_800);

/// How tokens are signed.
pub enum JwtKey {
    Hs256(hmac::Key),
    Es256(Box<EcdsaKeyPair>),
}

impl JwtKey {
    fn alg(&self) -> &'static str {
        match self {
            JwtKey::Hs256(_) => "HS256",
            JwtKey::Es256(_) => "ES256",
        }
    }
}

/// What to put in tokens.
pub struct Jwt {
    pub key: JwtKey,
    /// The `tenant` claim, if any.
    pub tenant: Option<String>,
    /// The header's `kid`, if any.
    pub kid: Option<String>,
}

/// The credentials of a run (shared by every connection).
pub struct Auth {
    pub jwt: Option<Jwt>,
    /// Key of the write signatures.
    pub signing: Option<hmac::Key>,
    rng: SystemRandom,
    /// Tells connections apart in nonces.
    connections: AtomicU64,
}

/// The command-line flags that make an [`Auth`].
#[derive(Clone, Debug, Default)]
pub struct AuthFiles<'a> {
    pub hs256_secret: Option<&'a Path>,
    pub es256_key: Option<&'a Path>,
    pub tenant: Option<&'a str>,
    pub kid: Option<&'a str>,
    pub signing_secret: Option<&'a Path>,
}

impl Auth {
    /// Reads the key files; `None` when no credential is asked for.
    pub fn load(files: &AuthFiles) -> Result<Option<Auth>, String> {
        let read = |path: &Path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
        let key = match (files.hs256_secret, files.es256_key) {
            (Some(_), Some(_)) => return Err("name one JWT key: an HS256 secret or an ES256 key".into()),
            (Some(path), None) => Some(JwtKey::Hs256(hmac::Key::new(hmac::HMAC_SHA256, secret(&read(path)?)))),
            (None, Some(path)) => {
                let der = pkcs8_der(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))?;
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &SystemRandom::new())
                    .map_err(|e| format!("{}: not a PKCS#8 P-256 private key ({e})", path.display()))?;
                Some(JwtKey::Es256(Box::new(pair)))
            }
            (None, None) => None,
        };
        if key.is_none() && (files.tenant.is_some() || files.kid.is_some()) {
            return Err(
                "--jwt-tenant and --jwt-kid need a JWT key (--jwt-hs256-secret-file or --jwt-es256-key-file)".into()
            );
        }
        let jwt = key.map(|key| Jwt { key, tenant: files.tenant.map(Into::into), kid: files.kid.map(Into::into) });
        let signing = match files.signing_secret {
            Some(path) => Some(hmac::Key::new(hmac::HMAC_SHA256, secret(&read(path)?))),
            None => None,
        };
        if jwt.is_none() && signing.is_none() {
            return Ok(None);
        }
        Ok(Some(Auth { jwt, signing, rng: SystemRandom::new(), connections: AtomicU64::new(0) }))
    }

    /// A token issued at `iat` (Unix seconds), valid for [`TOKEN_TTL`].
    pub fn mint(&self, iat: u64) -> Option<String> {
        let jwt = self.jwt.as_ref()?;
        let mut header = format!(r#"{{"alg":"{}","typ":"JWT""#, jwt.key.alg());
        if let Some(kid) = &jwt.kid {
            header.push_str(",\"kid\":");
            header.push_str(&serde_json::to_string(kid).expect("json"));
        }
        header.push('}');
        // serde_json's maps are sorted: exp, iat, roles, sub, tenant.
        let mut claims = serde_json::json!({
            "sub": SUBJECT,
            "roles": ROLES,
            "iat": iat,
            "exp": iat + TOKEN_TTL.as_secs(),
        });
        if let Some(tenant) = &jwt.tenant {
            claims["tenant"] = tenant.as_str().into();
        }
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("json")));
        let signature = match &jwt.key {
            JwtKey::Hs256(key) => hmac::sign(key, token.as_bytes()).as_ref().to_vec(),
            JwtKey::Es256(pair) => pair.sign(&self.rng, token.as_bytes()).expect("signing").as_ref().to_vec(),
        };
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Some(token)
    }

    /// A connection's share: its token and its nonces.
    pub fn connection(&self) -> ConnAuth {
        let mut random = [0u8; 8];
        self.rng.fill(&mut random).expect("random bytes");
        let id = self.connections.fetch_add(1, Ordering::Relaxed);
        ConnAuth { bearer: None, minted_at: 0, nonce_prefix: format!("{}{id:08x}", hex::encode(random)), requests: 0 }
    }

    /// `X-Signature` of a request: lowercase hex HMAC-SHA256 of
    /// `"{timestamp}\n{nonce}\n{METHOD}\n{path}\n{hex sha256(body)}"`,
    /// `path` without its query.
    pub fn signature(&self, timestamp: u64, nonce: &str, method: &str, path: &str, body: &[u8]) -> Option<String> {
        let key = self.signing.as_ref()?;
        Some(signature(key, timestamp, nonce, method, path, body))
    }
}

fn signature(key: &hmac::Key, timestamp: u64, nonce: &str, method: &str, path: &str, body: &[u8]) -> String {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let body_hash = hex::encode(digest::digest(&digest::SHA256, body));
    let message = format!("{timestamp}\n{nonce}\n{method}\n{path}\n{body_hash}");
    hex::encode(hmac::sign(key, message.as_bytes()))
}

/// A secret file's bytes, without the trailing newline an editor leaves.
fn secret(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

/// The DER of a PKCS#8 key given as PEM (`BEGIN PRIVATE KEY`) or as DER.
fn pkcs8_der(file: &[u8]) -> Result<Vec<u8>, String> {
    let Ok(text) = std::str::from_utf8(file) else { return Ok(file.to_vec()) };
    if !text.trim_start().starts_with("-----BEGIN") {
        return Ok(file.to_vec());
    }
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
    const END: &str = "-----END PRIVATE KEY-----";
    let Some(start) = text.find(BEGIN) else {
        return Err("not a PKCS#8 PEM key (BEGIN PRIVATE KEY); convert an EC key with \
                    `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.p8`"
            .into());
    };
    let body = &text[start + BEGIN.len()..];
    let body = &body[..body.find(END).ok_or("PEM key without its END line")?];
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(b64).map_err(|e| format!("bad PEM base64: {e}"))
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// One connection's credentials: its token (re-minted before it expires)
/// and a nonce prefix unique to it, followed by a request counter.
pub struct ConnAuth {
    bearer: Option<HeaderValue>,
    minted_at: u64,
    nonce_prefix: String,
    requests: u64,
}

/// The headers one request carries.
pub struct RequestAuth {
    pub authorization: Option<HeaderValue>,
    /// `(X-Timestamp, X-Nonce, X-Signature)` of a signed write.
    pub signed: Option<(HeaderValue, HeaderValue, HeaderValue)>,
}

impl ConnAuth {
    /// The headers of the next request (`body` is `None` for a read, which
    /// is not signed).
    pub fn headers(&mut self, auth: &Auth, method: &str, path: &str, body: Option<&[u8]>) -> RequestAuth {
        let now = unix_now();
        if auth.jwt.is_some() && (self.bearer.is_none() || now >= self.minted_at + TOKEN_REFRESH.as_secs()) {
            let token = auth.mint(now).expect("a JWT key");
            self.bearer = Some(HeaderValue::from_str(&format!("Bearer {token}")).expect("base64url is a header"));
            self.minted_at = now;
        }
        let signed = match (body, &auth.signing) {
            (Some(body), Some(key)) => {
                self.requests += 1;
                let nonce = format!("{}{:016x}", self.nonce_prefix, self.requests);
                let signature = signature(key, now, &nonce, method, path, body);
                Some((
                    HeaderValue::from(now),
                    HeaderValue::from_str(&nonce).expect("hex"),
                    HeaderValue::from_str(&signature).expect("hex"),
                ))
            }
            _ => None,
        };
        RequestAuth { authorization: self.bearer.clone(), signed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

    fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        file
    }

    /// The vector was computed apart from this code:
    /// `printf '%s' "$BODY" | openssl dgst -sha256`, then
    /// `printf '1700000000\n0011..eeff\nPOST\n/api/inventory/reserve\n%s' "$H" | openssl dgst -sha256 -hmac bench-secret`.
    #[test]
    fn a_write_signature_matches_openssls() {
        let secret = file(b"bench-secret\n");
        let files = AuthFiles { signing_secret: Some(secret.path()), ..Default::default() };
        let auth = Auth::load(&files).unwrap().unwrap();
        let body = br#"{"orderId":"o1","skuId":"s1","qty":1}"#;
        let nonce = "00112233445566778899aabbccddeeff";
        let expected = "4060d25891aa9ccb7326c83234ce53cb156ca1da33f5e344d29c9ee7a551990a";
        assert_eq!(auth.signature(1_700_000_000, nonce, "POST", "/api/inventory/reserve", body).unwrap(), expected);
        // The query is not signed.
        assert_eq!(auth.signature(1_700_000_000, nonce, "POST", "/api/inventory/reserve?x=1", body).unwrap(), expected);
        assert!(auth.mint(0).is_none(), "no JWT key, no token");
    }

    #[test]
    fn each_signed_write_has_its_own_nonce_and_reads_are_not_signed() {
        let secret = file(b"s");
        let auth =
            Auth::load(&AuthFiles { signing_secret: Some(secret.path()), ..Default::default() }).unwrap().unwrap();
        let (mut a, mut b) = (auth.connection(), auth.connection());
        let nonce = |r: RequestAuth| r.signed.unwrap().1.to_str().unwrap().to_string();
        let nonces = [
            nonce(a.headers(&auth, "POST", "/p", Some(b"{}"))),
            nonce(a.headers(&auth, "POST", "/p", Some(b"{}"))),
            nonce(b.headers(&auth, "POST", "/p", Some(b"{}"))),
        ];
        assert!(nonces[0] != nonces[1] && nonces[0] != nonces[2] && nonces[1] != nonces[2], "{nonces:?}");
        let read = a.headers(&auth, "GET", "/p", None);
        assert!(read.signed.is_none() && read.authorization.is_none());
    }

    /// The expected token was computed with Python's `hmac` and `json`
    /// (sorted keys, no spaces) and base64url without padding.
    #[test]
    fn an_hs256_token_matches_an_independent_encoding_and_decodes_to_its_claims() {
        let secret = file(b"jwt-secret\n");
        let files =
            AuthFiles { hs256_secret: Some(secret.path()), tenant: Some("t1"), kid: Some("k1"), ..Default::default() };
        let auth = Auth::load(&files).unwrap().unwrap();
        let token = auth.mint(1_700_000_000).unwrap();
        assert_eq!(
            token,
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImsxIn0.eyJleHAiOjE3MDAwMDM2MDAsImlhdCI6MTcwMDAwMDAwMCwicm9sZXMiO\
             lsicmVzZXJ2ZXIiLCJwYXltZW50IiwicmVjZWl2ZXIiLCJyZWFkZXIiXSwic3ViIjoiYmVuY2giLCJ0ZW5hbnQiOiJ0MSJ9.EcgQvRs2Pg08L\
             ASnoBX-LEA6ypV4m_krS0u_8Bjy8bk"
        );
        let parts: Vec<&str> = token.split('.').collect();
        let decode =
            |s: &str| -> serde_json::Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap() };
        assert_eq!(decode(parts[0]), serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": "k1"}));
        assert_eq!(
            decode(parts[1]),
            serde_json::json!({
                "sub": "bench",
                "roles": ["reserver", "payment", "receiver", "reader"],
                "iat": 1_700_000_000u64,
                "exp": 1_700_003_600u64,
                "tenant": "t1",
            })
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"jwt-secret");
        let signed = format!("{}.{}", parts[0], parts[1]);
        hmac::verify(&key, signed.as_bytes(), &URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
    }

    #[test]
    fn an_es256_token_from_a_pem_key_verifies_with_its_public_key() {
        let rng = SystemRandom::new();
        let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let public = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.as_ref(), &rng)
            .unwrap()
            .public_key()
            .as_ref()
            .to_vec();
        let b64 = STANDARD.encode(der.as_ref());
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"));
        for key_file in [file(pem.as_bytes()), file(der.as_ref())] {
            let auth =
                Auth::load(&AuthFiles { es256_key: Some(key_file.path()), ..Default::default() }).unwrap().unwrap();
            let token = auth.mint(1_000).unwrap();
            let parts: Vec<&str> = token.split('.').collect();
            let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
            assert_eq!(header, serde_json::json!({"alg": "ES256", "typ": "JWT"}));
            let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
            assert_eq!((claims["exp"].as_u64(), claims.get("tenant")), (Some(4_600), None));
            let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
            assert_eq!(signature.len(), 64, "JWS ES256 is r || s");
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &public)
                .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
                .unwrap();
        }
    }

    #[test]
    fn a_sec1_pem_key_is_refused_with_how_to_convert_it() {
        let key = file(b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n");
        let err = Auth::load(&AuthFiles { es256_key: Some(key.path()), ..Default::default() }).err().unwrap();
        assert!(err.contains("openssl pkcs8 -topk8"), "{err}");
        assert!(Auth::load(&AuthFiles::default()).unwrap().is_none());
        let secret = file(b"x");
        let both =
            AuthFiles { hs256_secret: Some(secret.path()), es256_key: Some(secret.path()), ..Default::default() };
        assert!(Auth::load(&both).is_err());
    }
}
