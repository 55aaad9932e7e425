//! Caller authorisation: the verified client certificate's identity against
//! the allow-list of the method's role. Refusals go to the `security` log
//! target with the certificate subject (a service, never a person).

use tonic::Request;

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
        if !self.enforce {
            return Ok(());
        }
        let Some(identity) = service_kit::tls::client_identity(req) else {
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
                ?role,
                "refused: caller not on the allow-list"
            );
            Err(AuthError::NotAllowed)
        }
    }
}
