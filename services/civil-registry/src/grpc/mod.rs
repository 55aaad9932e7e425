//! The `moj.civilstatus.v1.BirthRegistrationService` handlers: authenticate, convert,
//! one registry call, convert back.

pub mod auth;
pub mod convert;
pub mod status;

use contracts::moj::civilstatus::v1 as pb;
use pb::birth_registration_service_server::{
    BirthRegistrationService, BirthRegistrationServiceServer,
};
use tonic::{Request, Response, Status};

use crate::domain::error::{AuthFailure, RegistryError};
use crate::domain::model::Caller;
use crate::registry::Registry;
pub use auth::AuthenticatedOfficialsOnly;
use status::to_status;

/// The service as the server mounts it: officials authenticated before their messages
/// are read, messages up to `max_message_bytes`.
pub fn service(
    registry: Registry,
    max_message_bytes: usize,
) -> AuthenticatedOfficialsOnly<BirthRegistrationServiceServer<BirthRegistrationApi>> {
    let api = BirthRegistrationServiceServer::new(BirthRegistrationApi {
        registry: registry.clone(),
    })
    .max_decoding_message_size(max_message_bytes);
    AuthenticatedOfficialsOnly::new(api, registry)
}

/// The gRPC face of the [`Registry`].
#[derive(Clone, Debug)]
pub struct BirthRegistrationApi {
    registry: Registry,
}

impl BirthRegistrationApi {
    /// The official [`AuthenticatedOfficialsOnly`] admitted. A call that did not pass it
    /// (a wiring mistake) is refused, never served anonymously.
    fn caller<T>(&self, request: &mut Request<T>) -> Result<Caller, Status> {
        let caller = request
            .extensions_mut()
            .remove::<Caller>()
            .ok_or_else(|| to_status(RegistryError::Unauthenticated(AuthFailure::TokenMissing)))?;
        tracing::Span::current().record("official_id", caller.official_id.as_str());
        Ok(caller)
    }
}

#[tonic::async_trait]
impl BirthRegistrationService for BirthRegistrationApi {
    #[tracing::instrument(skip_all, fields(official_id))]
    async fn register_birth(
        &self,
        mut request: Request<pb::RegisterBirthRequest>,
    ) -> Result<Response<pb::RegisterBirthResponse>, Status> {
        let caller = self.caller(&mut request)?;
        let birth = convert::new_birth(request.get_ref()).map_err(to_status)?;
        let registration = self
            .registry
            .register(&caller, birth)
            .await
            .map_err(to_status)?;
        tracing::info!(registration_id = %registration.id, status = registration.status.as_str(), "birth registered");
        Ok(Response::new(pb::RegisterBirthResponse {
            registration: Some(convert::registration_to(registration)),
        }))
    }

    #[tracing::instrument(skip_all, fields(official_id))]
    async fn get_birth_registration(
        &self,
        mut request: Request<pb::GetBirthRegistrationRequest>,
    ) -> Result<Response<pb::GetBirthRegistrationResponse>, Status> {
        let caller = self.caller(&mut request)?;
        let id = convert::registration_id("name", &request.get_ref().name).map_err(to_status)?;
        let registration = self.registry.get(&caller, id).await.map_err(to_status)?;
        Ok(Response::new(pb::GetBirthRegistrationResponse {
            registration: Some(convert::registration_to(registration)),
        }))
    }

    #[tracing::instrument(skip_all, fields(official_id))]
    async fn list_birth_registrations(
        &self,
        mut request: Request<pb::ListBirthRegistrationsRequest>,
    ) -> Result<Response<pb::ListBirthRegistrationsResponse>, Status> {
        let caller = self.caller(&mut request)?;
        let query = convert::list_query(request.get_ref()).map_err(to_status)?;
        let (registrations, next) = self
            .registry
            .list(&caller, query)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListBirthRegistrationsResponse {
            registrations: registrations
                .into_iter()
                .map(convert::registration_to)
                .collect(),
            next_page_token: next.as_ref().map(convert::page_token).unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip_all, fields(official_id))]
    async fn correct_birth_registration(
        &self,
        mut request: Request<pb::CorrectBirthRegistrationRequest>,
    ) -> Result<Response<pb::CorrectBirthRegistrationResponse>, Status> {
        let caller = self.caller(&mut request)?;
        let correction = convert::correction(request.get_ref()).map_err(to_status)?;
        let (registration, reissued) = self
            .registry
            .correct(&caller, correction)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::CorrectBirthRegistrationResponse {
            registration: Some(convert::registration_to(registration)),
            personal_id_reissued: reissued,
        }))
    }

    #[tracing::instrument(skip_all, fields(official_id))]
    async fn get_registration_statistics(
        &self,
        mut request: Request<pb::GetRegistrationStatisticsRequest>,
    ) -> Result<Response<pb::GetRegistrationStatisticsResponse>, Status> {
        let caller = self.caller(&mut request)?;
        let (from, to, grouping, province) =
            convert::statistics_query(request.get_ref()).map_err(to_status)?;
        let (rows, total) = self
            .registry
            .statistics(&caller, from, to, grouping, province)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::GetRegistrationStatisticsResponse {
            rows: rows
                .into_iter()
                .map(|r| convert::stats_row_to(r.row.group.clone(), r.name, &r.row))
                .collect(),
            total: Some(convert::stats_row_to(String::new(), String::new(), &total)),
        }))
    }
}
