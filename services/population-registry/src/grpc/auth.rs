//! Caller authorisation: the verified client certificate's identity against
//! the allow-list of the method's role. Refusals go to the `security` log
//! target with the certificate subject (a service, never a person).
//!
//! [`AuthorizedCallersOnly`] checks the caller before its message is read (a caller
//! without the role cannot make the server hold megabytes); each handler checks
//! again, from the same table ([`role_of`]).

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

/// The role each method of the service needs; `None` for a name the service does not
/// have. A handler whose method is missing here checks for the stricter role.
pub fn role_of(method: &str) -> Option<Role> {
    match method {
        "IssuePersonalId" | "BatchIssuePersonalIds" | "ReissuePersonalId" => Some(Role::Mint),
        "GetCitizen"
        | "FindCitizenByRegistration"
        | "ValidatePersonalId"
        | "GetIssuanceStatistics"
        | "ListIssuances" => Some(Role::Read),
        _ => None,
    }
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
        self.check_identity(identity.as_deref(), role, method)
    }

    /// Admits `identity` for `role`.
    fn check_identity(
        &self,
        identity: Option<&ClientIdentity>,
        role: Role,
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
            Role::Mint => self.minting.iter().any(|a| identity.matches(a)),
            // A minting caller already learns numbers, so it may read them too.
            Role::Read => self
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
                dns_names = ?identity.dns_names,
                uris = ?identity.uris,
                ?role,
                "refused: caller not on the allow-list (matched by DNS or URI name, never the common name)"
            );
            Err(AuthError::NotAllowed)
        }
    }
}

/// Wraps the generated service: a call from a caller without the method's role is
/// answered at once, before its message is read and decoded. Paths of no method of the
/// service pass on, for tonic to answer UNIMPLEMENTED.
#[derive(Clone, Debug)]
pub struct AuthorizedCallersOnly<S> {
    inner: S,
    auth: Arc<Authorizer>,
}

impl<S> AuthorizedCallersOnly<S> {
    /// Puts the check in front of `inner`.
    pub fn new(inner: S, auth: Arc<Authorizer>) -> Self {
        Self { inner, auth }
    }
}

impl<S: NamedService> NamedService for AuthorizedCallersOnly<S> {
    const NAME: &'static str = S::NAME;
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send + 'static>>;

impl<S> tower::Service<http::Request<Body>> for AuthorizedCallersOnly<S>
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
        let role = req
            .uri()
            .path()
            .rsplit_once('/')
            .and_then(|(_, method)| Some((method, role_of(method)?)));
        let Some((method, role)) = role else {
            // No method of the service: tonic answers UNIMPLEMENTED.
            return Box::pin(self.inner.call(req));
        };
        match self.auth.check_identity(identity.as_deref(), role, method) {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(refused) => {
                let response = super::status::auth(refused).into_http();
                Box::pin(std::future::ready(Ok(response)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn every_method_of_the_contract_has_a_role_and_only_those_do() {
        let descriptors = prost_types::FileDescriptorSet::decode(contracts::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let methods: Vec<String> = descriptors
            .file
            .iter()
            .filter(|file| file.package() == "mps.population.v1")
            .flat_map(|file| &file.service)
            .filter(|service| service.name() == "PopulationRegistryService")
            .flat_map(|service| &service.method)
            .map(|method| method.name().to_owned())
            .collect();

        let without_role: Vec<&String> = methods.iter().filter(|m| role_of(m).is_none()).collect();

        assert!(methods.len() >= 8, "{methods:?}");
        assert!(without_role.is_empty(), "{without_role:?}");
        assert_eq!(role_of("IssuePersonalId"), Some(Role::Mint));
        assert_eq!(role_of("GetCitizen"), Some(Role::Read));
        assert_eq!(role_of("NoSuchMethod"), None);
    }
}
