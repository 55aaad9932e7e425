//! Caller authorisation: the verified client certificate's identity against
//! the allow-list of the method's role. Refusals go to the `security` log
//! target with the certificate subject (a service, never a person).
//!
//! Two checks: [`KnownCallersOnly`] refuses callers on no allow-list before their
//! message is read (an unknown caller cannot make the server hold megabytes), and
//! each handler then checks the role its method needs.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use service_kit::ClientIdentity;
use service_kit::tls::ConnectionInfo;
use tonic::Request;
use tonic::body::Body;
use tonic::server::NamedService;

use crate::config::AuthConfig;
use crate::domain::errors::AuthError;

/// What a method needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Issue or re-issue numbers.
    Mint,
    /// Read-only lookups.
    Read,
}

/// Allow-lists per role.
#[derive(Clone, Debug)]
pub struct Authorizer {
    minting: Vec<String>,
    read: Vec<String>,
    enforce: bool,
}

impl Authorizer {
    /// `enforce = false` only with the explicit plaintext development switch.
    pub fn new(cfg: &AuthConfig, enforce: bool) -> Self {
        if !enforce {
            tracing::warn!(
                target: "security",
                "client identity checks are DISABLED (server.tls.insecure_plaintext = true); \
                 never run like this outside development"
            );
        }
        Self {
            minting: cfg.minting_allowed.clone(),
            read: cfg.read_allowed.clone(),
            enforce,
        }
    }

    /// Admits or refuses the caller of `method`.
    pub fn check<T>(&self, req: &Request<T>, role: Role, method: &str) -> Result<(), AuthError> {
        let identity = service_kit::tls::client_identity(req);
        self.check_identity(identity.as_deref(), Some(role), method)
    }

    /// Admits `identity` for `role`, or, without a role, for any method at all (read, the
    /// role every allow-listed caller has).
    fn check_identity(
        &self,
        identity: Option<&ClientIdentity>,
        role: Option<Role>,
        method: &str,
    ) -> Result<(), AuthError> {
        if !self.enforce {
            return Ok(());
        }
        let Some(identity) = identity else {
            tracing::warn!(target: "security", method, "refused: no client certificate");
            return Err(AuthError::MissingCertificate);
        };
        let allowed = match role {
            Some(Role::Mint) => self.minting.iter().any(|a| identity.matches(a)),
            // A minting caller already learns numbers, so it may read them too.
            Some(Role::Read) | None => self
                .read
                .iter()
                .chain(&self.minting)
                .any(|a| identity.matches(a)),
        };
        if allowed {
            Ok(())
        } else {
            tracing::warn!(
                target: "security",
                method,
                subject = %identity.subject,
                role = ?role.unwrap_or(Role::Read),
                "refused: caller not on the allow-list"
            );
            Err(AuthError::NotAllowed)
        }
    }
}

/// Wraps the generated service: a call from a caller on no allow-list is answered at once,
/// before its message is read and decoded.
#[derive(Clone, Debug)]
pub struct KnownCallersOnly<S> {
    inner: S,
    auth: Arc<Authorizer>,
}

impl<S> KnownCallersOnly<S> {
    /// Puts the check in front of `inner`.
    pub fn new(inner: S, auth: Arc<Authorizer>) -> Self {
        Self { inner, auth }
    }
}

impl<S: NamedService> NamedService for KnownCallersOnly<S> {
    const NAME: &'static str = S::NAME;
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send + 'static>>;

impl<S> tower::Service<http::Request<Body>> for KnownCallersOnly<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let identity = req
            .extensions()
            .get::<ConnectionInfo>()
            .and_then(|info| info.client_identity.clone());
        let method = req.uri().path().rsplit('/').next().unwrap_or_default();
        match self.auth.check_identity(identity.as_deref(), None, method) {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(refused) => {
                let response = super::status::auth(refused).into_http();
                Box::pin(std::future::ready(Ok(response)))
            }
        }
    }
}
