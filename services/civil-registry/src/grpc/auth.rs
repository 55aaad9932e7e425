//! Officials are authenticated from the call's headers before its message is read: a
//! caller without a valid token is refused at once, so the public endpoint never buffers
//! or decodes a message for someone it does not know.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::server::NamedService;

use super::status::to_status;
use crate::registry::Registry;

/// The token of an `authorization: Bearer <token>` value. The scheme's name is
/// case-insensitive (RFC 9110, 11.1): clients send `Bearer`, `bearer` and `BEARER`.
pub(super) fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Wraps the generated service: a call whose token does not name an official is answered
/// UNAUTHENTICATED before its body is read; an admitted call carries its
/// [`Caller`](crate::domain::model::Caller) in the request's extensions, where the handlers
/// find it.
#[derive(Clone, Debug)]
pub struct AuthenticatedOfficialsOnly<S> {
    inner: S,
    registry: Registry,
}

impl<S> AuthenticatedOfficialsOnly<S> {
    /// Puts the check in front of `inner`.
    pub fn new(inner: S, registry: Registry) -> Self {
        Self { inner, registry }
    }
}

impl<S: NamedService> NamedService for AuthenticatedOfficialsOnly<S> {
    const NAME: &'static str = S::NAME;
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send + 'static>>;

impl<S> tower::Service<http::Request<Body>> for AuthenticatedOfficialsOnly<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        // The service polled ready goes with this call; its clone waits for the next.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        let registry = self.registry.clone();
        Box::pin(async move {
            let token = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(bearer_token);
            match registry.authenticate(token).await {
                Ok(caller) => {
                    req.extensions_mut().insert(caller);
                    tower::Service::call(&mut ready, req).await
                }
                Err(refused) => Ok(to_status(refused).into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_read_in_any_case_and_nothing_else_is_a_token() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "Bearer  abc "] {
            assert_eq!(bearer_token(value), Some("abc"), "{value:?}");
        }
        for value in ["", "abc", "Basic abc", "Bearerabc", "Token abc"] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }
}
