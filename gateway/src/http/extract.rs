//! What handlers take from a request besides its path: the caller's context,
//! the `Idempotency-Key` header, and a body read up to a limit.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::CONTENT_LENGTH;
use axum::http::request::Parts;
use axum::http::StatusCode;
use http_body_util::{BodyExt, Limited};
use inventory_runtime::Meta;

use std::sync::Arc;

use super::{ready, App, ANONYMOUS_OPERATOR};
use crate::api::{self, ApiError, ID_BYTES_MAX};
use crate::auth::{self, Identity};
use crate::trace::TraceContext;

/// Who asked, and in which trace: journaled with every write.
pub struct Ctx {
    pub trace: TraceContext,
    /// The token's subject with authentication on; else `X-Operator`.
    pub operator: String,
    /// Whether the request named its operator (a token or `X-Operator`).
    pub named: bool,
    /// The caller's token, with authentication on.
    pub identity: Option<Arc<Identity>>,
}

impl Ctx {
    pub fn meta(&self) -> Meta {
        Meta { trace_id: self.trace.trace_id, operator: self.operator.clone() }
    }

    /// The caller's tenant, with authentication on.
    pub fn tenant(&self) -> Option<&str> {
        self.identity.as_ref().and_then(|i| i.tenant.as_deref())
    }

    /// `id` (an order id or idempotency key) as stored for the caller's
    /// tenant. With authentication on, ids may not contain the tenant
    /// separator, so no caller can name another tenant's id.
    pub fn scope(&self, field: &str, id: String) -> Result<String, ApiError> {
        if self.identity.is_none() {
            return Ok(id);
        }
        if id.contains(auth::TENANT_SEPARATOR) {
            return Err(ApiError::invalid(format!("{field} must not contain {:?}", auth::TENANT_SEPARATOR)));
        }
        Ok(auth::scoped(self.tenant(), id))
    }

    /// Whether a stored order id is in the caller's scope; with
    /// authentication off every id is.
    pub fn owns<'a>(&self, stored: &'a str) -> Option<&'a str> {
        match self.identity {
            None => Some(stored),
            Some(_) => auth::unscoped(self.tenant(), stored),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Ctx, ApiError> {
        let trace = *parts.extensions.get::<TraceContext>().expect("the observing middleware runs first");
        if let Some(identity) = parts.extensions.get::<Arc<Identity>>() {
            // The token says who acts: X-Operator is not looked at.
            return Ok(Ctx { trace, operator: identity.sub.clone(), named: true, identity: Some(identity.clone()) });
        }
        let operator = match parts.headers.get("x-operator") {
            None => None,
            Some(v) => {
                let v = v.to_str().map_err(|_| ApiError::invalid("X-Operator header must be visible ASCII"))?;
                api::check_text("X-Operator", v, ID_BYTES_MAX)?;
                Some(v.to_string())
            }
        };
        let named = operator.is_some();
        Ok(Ctx { trace, operator: operator.unwrap_or_else(|| ANONYMOUS_OPERATOR.to_string()), named, identity: None })
    }
}

/// The `Idempotency-Key` header, if the request has one.
pub struct HeaderKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for HeaderKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<HeaderKey, ApiError> {
        match parts.headers.get("idempotency-key") {
            None => Ok(HeaderKey(None)),
            Some(v) => v
                .to_str()
                .map(|s| HeaderKey(Some(s.to_string())))
                .map_err(|_| ApiError::invalid("Idempotency-Key header must be visible ASCII")),
        }
    }
}

/// A request body of at most `LIMIT` bytes; a longer one is 413, refused
/// from its `Content-Length` before it is read where it declares one.
pub struct BodyBytes<const LIMIT: usize>(pub Bytes);

/// The body of most requests.
pub type SmallBody = BodyBytes<{ api::BODY_BYTES_MAX }>;
/// The body of a bulk receipt.
pub type BatchBody = BodyBytes<{ api::BATCH_BODY_BYTES_MAX }>;

impl<S: Send + Sync, const LIMIT: usize> FromRequest<S> for BodyBytes<LIMIT> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &S) -> Result<BodyBytes<LIMIT>, ApiError> {
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!("request bodies are limited to {LIMIT} bytes"),
            )
        };
        let declared =
            request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > LIMIT as u64) {
            return Err(too_large());
        }
        match Limited::new(request.into_body(), LIMIT).collect().await {
            Ok(collected) => Ok(BodyBytes(collected.to_bytes())),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_large()),
            Err(e) if timed_out(e.as_ref()) => Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "REQUEST_TIMEOUT",
                "the request body did not arrive in time",
            )),
            Err(e) => Err(ApiError::invalid(format!("could not read the request body: {e}"))),
        }
    }
}

/// Whether a body read failed because its deadline passed
/// (`--body-read-timeout-secs`).
pub(super) fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if e.is::<crate::server::BodyTimeout>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// A JSON write body that may carry its idempotency key.
pub trait WriteBody: serde::de::DeserializeOwned {
    /// Takes the body's `idemKey`, if it has one.
    fn take_idem_key(&mut self) -> Option<String>;
}

macro_rules! write_bodies {
    ($($body:ty),*) => {$(
        impl WriteBody for $body {
            fn take_idem_key(&mut self) -> Option<String> {
                self.idem_key.take()
            }
        }
    )*};
}
write_bodies!(
    api::ReceiveBody,
    api::ReserveBody,
    api::ConfirmBody,
    api::ReleaseBody,
    api::FreezeBody,
    api::ProposeBody,
    api::DecisionBody,
    api::TransferBody,
    api::PolicyBody,
    api::OrderReserveBody,
    api::OrderConfirmBody,
    api::OrderReleaseBody
);

/// A single write: who asked, its JSON body, and its idempotency key (from
/// the body or the `Idempotency-Key` header, which must agree). Checked in
/// this order: the caller's headers, the body's size, that the service is
/// ready, the body's JSON, the key.
pub struct Write<T> {
    pub ctx: Ctx,
    pub body: T,
    pub idem_key: String,
}

impl<T: WriteBody> FromRequest<Arc<App>> for Write<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &Arc<App>) -> Result<Write<T>, ApiError> {
        let (mut parts, body) = request.into_parts();
        let ctx = Ctx::from_request_parts(&mut parts, app).await?;
        let HeaderKey(header_key) = HeaderKey::from_request_parts(&mut parts, app).await?;
        let BodyBytes(bytes) = SmallBody::from_request(Request::from_parts(parts, body), app).await?;
        ready(app)?;
        let mut body: T = api::parse(&bytes)?;
        let idem_key = api::idem_key(body.take_idem_key(), header_key.as_deref())?;
        let idem_key = ctx.scope("idemKey", idem_key)?;
        Ok(Write { ctx, body, idem_key })
    }
}

/// A path parameter, percent-decoded and checked like any id.
pub fn path_id(field: &str, path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(value) = path.map_err(|_| ApiError::invalid(format!("{field} in the path is not UTF-8")))?;
    api::check_text(field, &value, ID_BYTES_MAX)?;
    Ok(value)
}
