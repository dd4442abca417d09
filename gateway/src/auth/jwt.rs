//! JSON Web Tokens (RFC 7519) in compact JWS form, verified with `ring`:
//! HS256 against a shared secret, RS256, ES256 and EdDSA (Ed25519)
//! against the public keys of a JWKS file. `alg: none` and every other
//! algorithm are refused.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, UnparsedPublicKey};
use serde::Deserialize;

/// Why a token was refused. The text is safe to show the caller: it never
/// repeats the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a compact JWS (header.payload.signature)")]
    Malformed,
    #[error("the token's algorithm {0:?} is not accepted")]
    Algorithm(String),
    #[error("no key verifies the token (unknown kid or wrong key)")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token's issuer is not accepted")]
    Issuer,
    #[error("the token's audience is not accepted")]
    Audience,
    #[error("the token's claims are invalid: {0}")]
    Claims(String),
}

impl TokenError {
    /// The `reason` label of the refusal metric.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Malformed | TokenError::Claims(_) => "malformed",
            TokenError::Algorithm(_) => "algorithm",
            TokenError::UnknownKey => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::Issuer | TokenError::Audience => "issuer_or_audience",
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// `aud` is a string or an array of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The claims the service reads; others are ignored.
#[derive(Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub tenant: Option<String>,
    pub exp: u64,
    #[serde(default)]
    pub nbf: Option<u64>,
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    /// Set by the caller's risk service once a second check passed.
    #[serde(default)]
    pub risk_cleared: bool,
}

/// A public key from a JWKS file.
#[derive(Clone, Debug)]
pub enum PublicKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed SEC1 point `04 || x || y`.
    P256(Vec<u8>),
    Ed25519(Vec<u8>),
}

impl PublicKey {
    fn alg(&self) -> &'static str {
        match self {
            PublicKey::Rsa { .. } => "RS256",
            PublicKey::P256(_) => "ES256",
            PublicKey::Ed25519(_) => "EdDSA",
        }
    }

    fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        match self {
            PublicKey::Rsa { n, e } => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
            PublicKey::P256(point) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(message, sig).is_ok()
            }
            PublicKey::Ed25519(key) => UnparsedPublicKey::new(&signature::ED25519, key).verify(message, sig).is_ok(),
        }
    }
}

/// The keys tokens are checked against.
#[derive(Default)]
pub struct KeySet {
    pub hs256: Option<ring::hmac::Key>,
    /// `(kid, key)`; a token with a `kid` is checked against that key only.
    pub public: Vec<(Option<String>, PublicKey)>,
}

/// What is checked besides the signature.
#[derive(Clone, Debug, Default)]
pub struct Expect {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Seconds of clock difference allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
}

/// Verifies `token`'s signature and its time, issuer and audience claims
/// at `now_secs`; returns its claims.
pub fn verify(token: &str, keys: &KeySet, expect: &Expect, now_secs: u64) -> Result<Claims, TokenError> {
    let (signed, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let (header, payload) = signed.split_once('.').ok_or(TokenError::Malformed)?;
    let header: Header = serde_json::from_slice(&decode(header)?).map_err(|_| TokenError::Malformed)?;
    let sig = decode(sig)?;
    let message = signed.as_bytes();
    let verified = match header.alg.as_str() {
        "HS256" => {
            let key = keys.hs256.as_ref().ok_or(TokenError::UnknownKey)?;
            ring::hmac::verify(key, message, &sig).is_ok()
        }
        alg @ ("RS256" | "ES256" | "EdDSA") => {
            let mut candidates = keys
                .public
                .iter()
                .filter(|(kid, key)| {
                    key.alg() == alg && (header.kid.is_none() || kid.as_deref() == header.kid.as_deref())
                })
                .peekable();
            if candidates.peek().is_none() {
                return Err(TokenError::UnknownKey);
            }
            candidates.any(|(_, key)| key.verify(message, &sig))
        }
        other => return Err(TokenError::Algorithm(other.to_string())),
    };
    if !verified {
        return Err(TokenError::BadSignature);
    }
    let claims: Claims = serde_json::from_slice(&decode(payload)?).map_err(|e| TokenError::Claims(e.to_string()))?;
    if claims.sub.is_empty() || claims.sub.len() > 128 || claims.sub.chars().any(char::is_control) {
        return Err(TokenError::Claims("sub must be 1 to 128 visible characters".into()));
    }
    if let Some(tenant) = &claims.tenant {
        if !valid_tenant(tenant) {
            return Err(TokenError::Claims("tenant must be 1 to 64 of A-Z a-z 0-9 . _ -".into()));
        }
    }
    if now_secs >= claims.exp.saturating_add(expect.leeway_secs) {
        return Err(TokenError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| now_secs.saturating_add(expect.leeway_secs) < nbf) {
        return Err(TokenError::NotYetValid);
    }
    if let Some(issuer) = &expect.issuer {
        if claims.iss.as_deref() != Some(issuer.as_str()) {
            return Err(TokenError::Issuer);
        }
    }
    if let Some(audience) = &expect.audience {
        let ok = match &claims.aud {
            Some(Audience::One(a)) => a == audience,
            Some(Audience::Many(all)) => all.iter().any(|a| a == audience),
            None => false,
        };
        if !ok {
            return Err(TokenError::Audience);
        }
    }
    Ok(claims)
}

pub fn valid_tenant(tenant: &str) -> bool {
    (1..=64).contains(&tenant.len()) && tenant.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn decode(part: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed)
}

/// The keys of a JWKS document (`{"keys":[...]}`): RSA (`n`, `e`), EC P-256
/// (`x`, `y`) and OKP Ed25519 (`x`) public keys. Keys for other uses
/// (`use` other than `sig`) or curves are refused rather than skipped, so a
/// typo does not silently drop a key.
pub fn parse_jwks(text: &str) -> Result<Vec<(Option<String>, PublicKey)>, String> {
    #[derive(Deserialize)]
    struct Jwks {
        keys: Vec<Jwk>,
    }
    #[derive(Deserialize)]
    struct Jwk {
        kty: String,
        #[serde(default)]
        kid: Option<String>,
        #[serde(default, rename = "use")]
        usage: Option<String>,
        #[serde(default)]
        crv: Option<String>,
        #[serde(default)]
        n: Option<String>,
        #[serde(default)]
        e: Option<String>,
        #[serde(default)]
        x: Option<String>,
        #[serde(default)]
        y: Option<String>,
    }
    let jwks: Jwks = serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let field = |value: &Option<String>, name: &str, kid: &Option<String>| -> Result<Vec<u8>, String> {
        let value = value.as_deref().ok_or_else(|| format!("key {kid:?} has no {name}"))?;
        URL_SAFE_NO_PAD.decode(value).map_err(|_| format!("key {kid:?}: {name} is not base64url"))
    };
    let mut keys = Vec::new();
    for jwk in &jwks.keys {
        if jwk.usage.as_deref().is_some_and(|u| u != "sig") {
            return Err(format!("key {:?} is for {:?}, not signatures", jwk.kid, jwk.usage));
        }
        let key = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("RSA", _) => PublicKey::Rsa { n: field(&jwk.n, "n", &jwk.kid)?, e: field(&jwk.e, "e", &jwk.kid)? },
            ("EC", Some("P-256")) => {
                let (x, y) = (field(&jwk.x, "x", &jwk.kid)?, field(&jwk.y, "y", &jwk.kid)?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(format!("key {:?}: P-256 coordinates are 32 bytes", jwk.kid));
                }
                PublicKey::P256([&[4u8][..], &x, &y].concat())
            }
            ("OKP", Some("Ed25519")) => PublicKey::Ed25519(field(&jwk.x, "x", &jwk.kid)?),
            (kty, crv) => return Err(format!("key {:?}: key type {kty} {crv:?} is not supported", jwk.kid)),
        };
        keys.push((jwk.kid.clone(), key));
    }
    Ok(keys)
}

/// Signs tokens: for tests, the benchmark harness and `inventoryctl token`.
pub mod mint {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    /// A signing key and the `alg` it signs with.
    pub enum SigningKey {
        Hs256(Vec<u8>),
        Es256(EcdsaKeyPair),
        EdDsa(Ed25519KeyPair),
    }

    impl SigningKey {
        /// A new random P-256 key and its PKCS#8 document.
        pub fn generate_es256() -> (SigningKey, Vec<u8>) {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("random");
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("key");
            (SigningKey::Es256(pair), pkcs8.as_ref().to_vec())
        }

        /// A P-256 key from its PKCS#8 document.
        pub fn es256_from_pkcs8(pkcs8: &[u8]) -> Result<SigningKey, String> {
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &SystemRandom::new())
                .map(SigningKey::Es256)
                .map_err(|e| format!("not a PKCS#8 P-256 key: {e}"))
        }

        /// A new random Ed25519 key.
        pub fn generate_ed25519() -> SigningKey {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("random");
            SigningKey::EdDsa(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key"))
        }

        pub fn alg(&self) -> &'static str {
            match self {
                SigningKey::Hs256(_) => "HS256",
                SigningKey::Es256(_) => "ES256",
                SigningKey::EdDsa(_) => "EdDSA",
            }
        }

        /// The public half as a JWK (none for a shared secret).
        pub fn jwk(&self, kid: &str) -> Option<serde_json::Value> {
            use ring::signature::KeyPair;
            match self {
                SigningKey::Hs256(_) => None,
                SigningKey::Es256(pair) => {
                    let point = pair.public_key().as_ref();
                    Some(serde_json::json!({
                        "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
                    }))
                }
                SigningKey::EdDsa(pair) => Some(serde_json::json!({
                    "kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig",
                    "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
                })),
            }
        }

        /// A compact JWS of `claims`, with `kid` in the header if given.
        pub fn sign(&self, claims: &serde_json::Value, kid: Option<&str>) -> String {
            let mut header = serde_json::json!({ "alg": self.alg(), "typ": "JWT" });
            if let Some(kid) = kid {
                header["kid"] = kid.into();
            }
            let signed = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let sig = match self {
                SigningKey::Hs256(secret) => {
                    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
                    ring::hmac::sign(&key, signed.as_bytes()).as_ref().to_vec()
                }
                SigningKey::Es256(pair) => {
                    pair.sign(&SystemRandom::new(), signed.as_bytes()).expect("signing").as_ref().to_vec()
                }
                SigningKey::EdDsa(pair) => pair.sign(signed.as_bytes()).as_ref().to_vec(),
            };
            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mint::SigningKey;
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;

    fn claims() -> serde_json::Value {
        json!({ "sub": "alice", "roles": ["reserver"], "tenant": "acme", "exp": NOW + 60, "iss": "idp", "aud": ["inventory"] })
    }

    fn hs_keys(secret: &[u8]) -> KeySet {
        KeySet { hs256: Some(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret)), public: Vec::new() }
    }

    #[test]
    fn an_hs256_token_verifies_and_yields_its_claims() {
        let token = SigningKey::Hs256(b"s3cret".to_vec()).sign(&claims(), None);
        let c = verify(&token, &hs_keys(b"s3cret"), &Expect::default(), NOW).unwrap();
        assert_eq!(
            (c.sub.as_str(), c.roles.as_slice(), c.tenant.as_deref()),
            ("alice", &["reserver".to_string()][..], Some("acme"))
        );
        assert_eq!(verify(&token, &hs_keys(b"other"), &Expect::default(), NOW).err(), Some(TokenError::BadSignature));
    }

    #[test]
    fn es256_and_eddsa_tokens_verify_against_their_jwks() {
        for (key, kid) in [(SigningKey::generate_es256().0, "ec"), (SigningKey::generate_ed25519(), "ed")] {
            let jwks = json!({ "keys": [key.jwk(kid).unwrap()] }).to_string();
            let keys = KeySet { hs256: None, public: parse_jwks(&jwks).unwrap() };
            let token = key.sign(&claims(), Some(kid));
            assert_eq!(verify(&token, &keys, &Expect::default(), NOW).unwrap().sub, "alice");
            // Another key of the same kind under the same kid does not verify.
            let other = match key {
                SigningKey::Es256(_) => SigningKey::generate_es256().0,
                _ => SigningKey::generate_ed25519(),
            };
            let forged = other.sign(&claims(), Some(kid));
            assert_eq!(verify(&forged, &keys, &Expect::default(), NOW).err(), Some(TokenError::BadSignature));
            let unknown = key.sign(&claims(), Some("nope"));
            assert_eq!(verify(&unknown, &keys, &Expect::default(), NOW).err(), Some(TokenError::UnknownKey));
        }
    }

    #[test]
    fn alg_none_and_tampered_tokens_are_refused() {
        let token = SigningKey::Hs256(b"k".to_vec()).sign(&claims(), None);
        let (_, rest) = token.split_once('.').unwrap();
        let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        let (payload, _) = rest.split_once('.').unwrap();
        let unsigned = format!("{none_header}.{payload}.");
        assert_eq!(
            verify(&unsigned, &hs_keys(b"k"), &Expect::default(), NOW).err(),
            Some(TokenError::Algorithm("none".into()))
        );
        let mut admin = claims();
        admin["roles"] = json!(["admin"]);
        let tampered = format!(
            "{}.{}.{}",
            token.split('.').next().unwrap(),
            URL_SAFE_NO_PAD.encode(admin.to_string()),
            token.rsplit('.').next().unwrap()
        );
        assert_eq!(verify(&tampered, &hs_keys(b"k"), &Expect::default(), NOW).err(), Some(TokenError::BadSignature));
        assert_eq!(verify("abc", &hs_keys(b"k"), &Expect::default(), NOW).err(), Some(TokenError::Malformed));
    }

    #[test]
    fn time_issuer_and_audience_are_checked() {
        let key = SigningKey::Hs256(b"k".to_vec());
        let keys = hs_keys(b"k");
        let token = key.sign(&claims(), None);
        assert_eq!(verify(&token, &keys, &Expect::default(), NOW + 60).err(), Some(TokenError::Expired));
        let mut later = claims();
        later["nbf"] = json!(NOW + 30);
        let later = key.sign(&later, None);
        assert_eq!(verify(&later, &keys, &Expect::default(), NOW).err(), Some(TokenError::NotYetValid));
        assert!(verify(&later, &keys, &Expect::default(), NOW + 30).is_ok());
        let expect = Expect { issuer: Some("idp".into()), audience: Some("inventory".into()), leeway_secs: 0 };
        assert!(verify(&token, &keys, &expect, NOW).is_ok());
        let other_aud = Expect { audience: Some("billing".into()), ..expect.clone() };
        assert_eq!(verify(&token, &keys, &other_aud, NOW).err(), Some(TokenError::Audience));
        let other_iss = Expect { issuer: Some("evil".into()), ..expect };
        assert_eq!(verify(&token, &keys, &other_iss, NOW).err(), Some(TokenError::Issuer));
    }

    #[test]
    fn an_rs256_token_verifies_against_its_modulus_and_exponent() {
        // A 2048-bit key made by `openssl genrsa` (PKCS#1 DER), if openssl
        // is there.
        let dir = tempfile::tempdir().unwrap();
        let (pem, der) = (dir.path().join("k.pem"), dir.path().join("k.der"));
        let Ok(out) = std::process::Command::new("openssl")
            .args(["genrsa", "-traditional", "-out"])
            .arg(&pem)
            .arg("2048")
            .output()
        else {
            return;
        };
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let out = std::process::Command::new("openssl")
            .args(["rsa", "-traditional", "-outform", "DER", "-in"])
            .arg(&pem)
            .arg("-out")
            .arg(&der)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let pair = ring::signature::RsaKeyPair::from_der(&std::fs::read(&der).unwrap()).unwrap();
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"r"}"#),
            URL_SAFE_NO_PAD.encode(claims().to_string())
        );
        let mut sig = vec![0; pair.public().modulus_len()];
        pair.sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), signed.as_bytes(), &mut sig)
            .unwrap();
        let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&sig));
        use ring::signature::KeyPair;
        let components: ring::signature::RsaPublicKeyComponents<Vec<u8>> = pair.public_key().into();
        let jwks = json!({ "keys": [{ "kty": "RSA", "kid": "r", "n": URL_SAFE_NO_PAD.encode(&components.n), "e": URL_SAFE_NO_PAD.encode(&components.e) }] });
        let keys = KeySet { hs256: None, public: parse_jwks(&jwks.to_string()).unwrap() };
        assert_eq!(verify(&token, &keys, &Expect::default(), NOW).unwrap().sub, "alice");
    }
}
