//! The guard in front of every handler: bearer tokens and roles, signed
//! writes, and the start-up rules that decide whether the service may run
//! open.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use inventory_runtime::metrics::ReasonLabels;

use super::{App, Endpoint};
use crate::api::{self, ApiError};
use crate::auth::jwt::Expect;
use crate::auth::risk::RiskCheck;
use crate::auth::signed::{Refusal, Signed, SignedWrites};
use crate::auth::{read_secret, Auth, AuthConfig, Identity, Role, TokenError};
use crate::config::Config;

/// Who may call, and how writes must be signed.
#[derive(Default)]
pub struct Security {
    /// Bearer-token authentication (`--auth jwt`); `None` runs open.
    pub auth: Option<Auth>,
    /// With authentication on, whether /metrics needs no token.
    pub metrics_open: bool,
    pub signed_writes: Option<SignedWrites>,
    pub risk: Option<RiskCheck>,
    /// `--payment-id-key-file`: payment ids are kept as their keyed hash.
    pub payment_id_key: Option<ring::hmac::Key>,
}

impl Security {
    /// The payment id as it is journaled: with a key, `hmac-` and the hex
    /// HMAC-SHA256 of the id, so the journal, PostgreSQL and the events
    /// never hold it while a repeated callback still matches.
    pub fn payment_id(&self, id: String) -> String {
        match &self.payment_id_key {
            Some(key) => format!("hmac-{}", hex::encode(ring::hmac::sign(key, id.as_bytes()))),
            None => id,
        }
    }

    /// The security `config` asks for on `listen`. Listening beyond
    /// loopback with no `--auth` flag is refused, like Redis's protected
    /// mode; on loopback the service runs open and says so.
    pub fn from_config(config: &Config, listen: SocketAddr) -> Result<Security, String> {
        protected_mode(config, listen)?;
        let auth = match config.auth.as_deref() {
            Some("jwt") => Some(
                Auth::new(AuthConfig {
                    hs256_secret_file: config.jwt_hs256_secret_file.clone(),
                    jwks_file: config.jwt_jwks_file.clone(),
                    expect: Expect {
                        issuer: config.jwt_issuer.clone(),
                        audience: config.jwt_audience.clone(),
                        leeway_secs: config.jwt_leeway_secs,
                    },
                })
                .map_err(|e| e.0)?,
            ),
            Some(_) => None,
            None if listen.ip().is_loopback() => {
                tracing::warn!(
                    %listen,
                    "running without authentication: any local process may call every endpoint; \
                     pass --auth jwt (or --auth none to silence this)"
                );
                None
            }
            None => unreachable!("refused by protected_mode"),
        };
        if auth.is_none() && (config.jwt_hs256_secret_file.is_some() || config.jwt_jwks_file.is_some()) {
            return Err("--jwt-hs256-secret-file and --jwt-jwks-file need --auth jwt".into());
        }
        let signed_writes = match &config.signed_writes_secret_file {
            Some(path) => Some(SignedWrites::new(&read_secret(path).map_err(|e| e.0)?)),
            None => None,
        };
        Ok(Security {
            auth,
            metrics_open: config.metrics_open,
            signed_writes,
            risk: config.risk_max_units_per_minute.map(RiskCheck::new),
            payment_id_key: match &config.payment_id_key_file {
                Some(path) => Some(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &read_secret(path).map_err(|e| e.0)?)),
                None => None,
            },
        })
    }
}

/// Refuses to listen beyond loopback when no `--auth` flag says how
/// callers are checked.
pub fn protected_mode(config: &Config, listen: SocketAddr) -> Result<(), String> {
    if config.auth.is_none() && !listen.ip().is_loopback() {
        return Err(format!(
            "refusing to listen on {listen} without authentication: pass --auth jwt \
             (with --jwt-hs256-secret-file or --jwt-jwks-file), or --auth none to run open on purpose"
        ));
    }
    Ok(())
}

impl Endpoint {
    /// The roles any one of which lets a caller in; none for the open
    /// endpoints.
    pub fn roles(self, metrics_open: bool) -> &'static [Role] {
        match self {
            // The console's files hold no data; its API calls carry the token.
            Endpoint::Health
            | Endpoint::Ready
            | Endpoint::OpenApi
            | Endpoint::ConsoleRoot
            | Endpoint::Console
            | Endpoint::ConsoleFile => &[],
            Endpoint::Metrics if metrics_open => &[],
            Endpoint::Metrics => &[Role::Admin],
            Endpoint::Reserve
            | Endpoint::Release
            | Endpoint::Reservation
            | Endpoint::OrderStatus
            | Endpoint::ReadModelOrderStatus
            | Endpoint::OrderReserve
            | Endpoint::OrderRelease => &[Role::Reserver],
            Endpoint::Confirm | Endpoint::OrderConfirm => &[Role::Payment],
            Endpoint::Stock => &[Role::Reader],
            Endpoint::Receive | Endpoint::ReceiveBatch => &[Role::Receiver],
            Endpoint::Freeze
            | Endpoint::Unfreeze
            | Endpoint::PolicySet
            | Endpoint::PolicyRemove
            | Endpoint::AdjustmentPropose
            | Endpoint::TransferDispatch
            | Endpoint::TransferList
            | Endpoint::Transfer
            | Endpoint::TransferArrive
            | Endpoint::TransferCancel => &[Role::Operator],
            // Both sides of the two-person rule see the pending list.
            Endpoint::AdjustmentList | Endpoint::Adjustment => &[Role::Operator, Role::Approver],
            Endpoint::AdjustmentApprove | Endpoint::AdjustmentReject => &[Role::Approver],
            Endpoint::AdminPersistence
            | Endpoint::AdminReconcile
            | Endpoint::AdminSnapshot
            | Endpoint::AdminCapacity
            | Endpoint::AdminEvents => &[Role::Admin],
        }
    }
}

/// Checks the caller's token and role and a write's signature; a refused
/// request reaches no handler. The caller's [`Identity`] goes into the
/// request's extensions.
pub(super) async fn guard(State(app): State<Arc<App>>, mut request: Request, next: Next) -> Response {
    // The observing middleware, outside this one, found the endpoint.
    let Some(&endpoint) = request.extensions().get::<Endpoint>() else {
        return next.run(request).await;
    };
    let security = &app.security;
    let now_secs = app.runtime.clock.now_ms() / 1_000;
    if let Some(auth) = &security.auth {
        let roles = endpoint.roles(security.metrics_open);
        if !roles.is_empty() {
            match authenticate(auth, request.headers(), roles, now_secs) {
                Ok(identity) => {
                    request.extensions_mut().insert(identity);
                }
                Err((reason, e)) => {
                    app.runtime.metrics.auth_refusals.get_or_create(&ReasonLabels { reason }).inc();
                    return e.into_response();
                }
            }
        }
    }
    if let (Some(signed), true) = (&security.signed_writes, request.method() == Method::POST) {
        let limit = if endpoint == Endpoint::ReceiveBatch { api::BATCH_BODY_BYTES_MAX } else { api::BODY_BYTES_MAX };
        let (parts, body) = request.into_parts();
        let declared =
            parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return too_large(limit).into_response();
        }
        let body = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                return too_large(limit).into_response()
            }
            Err(e) if super::extract::timed_out(e.as_ref()) => {
                let message = "the request body did not arrive in time";
                return ApiError::new(StatusCode::REQUEST_TIMEOUT, "REQUEST_TIMEOUT", message).into_response();
            }
            Err(e) => return ApiError::invalid(format!("could not read the request body: {e}")).into_response(),
        };
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let shown = Signed {
            timestamp: header("x-timestamp"),
            nonce: header("x-nonce"),
            signature: header("x-signature"),
            method: parts.method.as_str(),
            path: parts.uri.path(),
            body: &body,
        };
        if let Err(refusal) = signed.check(&shown, now_secs) {
            let (reason, code, message) = match refusal {
                Refusal::Stale(m) => ("stale_request", "STALE_REQUEST", m),
                Refusal::Replayed => {
                    ("replayed_request", "REPLAYED_REQUEST", "this nonce was already used inside the window".into())
                }
                Refusal::BadSignature(m) => ("bad_signature", "BAD_SIGNATURE", m),
            };
            app.runtime.metrics.auth_refusals.get_or_create(&ReasonLabels { reason }).inc();
            return ApiError::new(StatusCode::UNAUTHORIZED, code, message).into_response();
        }
        request = Request::from_parts(parts, axum::body::Body::from(body));
    }
    next.run(request).await
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        format!("request bodies are limited to {limit} bytes"),
    )
}

/// The identity a request's bearer token proves, if it holds one of `roles`.
fn authenticate(
    auth: &Auth,
    headers: &HeaderMap,
    roles: &[Role],
    now_secs: u64,
) -> Result<Arc<Identity>, (&'static str, ApiError)> {
    let unauthenticated =
        |reason, message: String| (reason, ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message));
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(unauthenticated("missing", "this endpoint needs Authorization: Bearer <token>".into()));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthenticated("malformed", "the Authorization header must be Bearer <token>".into()))?;
    let identity = auth.verify(token, now_secs).map_err(|e: TokenError| unauthenticated(e.reason(), e.to_string()))?;
    if !identity.has_any(roles) {
        let names: Vec<&str> = roles.iter().map(|r| r.name()).collect();
        let mut e = ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            format!("this endpoint needs the role {}", names.join(" or ")),
        );
        e.detail = Some(serde_json::json!({ "requiredRoles": names }));
        return Err(("forbidden", e));
    }
    Ok(identity)
}
