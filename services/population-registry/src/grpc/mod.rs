//! The gRPC face of the registry: thin handlers that authorise the caller,
//! convert proto to domain, make one store call and convert back.

pub mod auth;
pub mod convert;
pub mod status;

use std::pin::Pin;
use std::sync::Arc;

use contracts::mps::population::v1 as pb;
use contracts::mps::population::v1::population_registry_service_server::PopulationRegistryService;
use futures::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use crate::domain::citizen::IssueRequest;
use crate::domain::errors::{IssueError, LookupError, ReissueError};
use crate::domain::personal_id::PersonalId;
use crate::domain::province::ProvinceTable;
use crate::store::Store;
use auth::{Authorizer, role_of};

/// Request messages of one batch stream processed concurrently (answers stay in order).
const BATCH_PIPELINE: usize = 16;
/// Most items in one batch message.
const MAX_BATCH_ITEMS: usize = 1000;

/// Implementation of `mps.population.v1.PopulationRegistryService`.
#[derive(Clone, Debug)]
pub struct RegistryService {
    store: Store,
    auth: Arc<Authorizer>,
    provinces: Arc<ProvinceTable>,
}

impl RegistryService {
    /// A service over `store`.
    pub fn new(store: Store, auth: Arc<Authorizer>, provinces: Arc<ProvinceTable>) -> Self {
        Self {
            store,
            auth,
            provinces,
        }
    }

    fn allow<T>(&self, req: &Request<T>, method: &str) -> Result<(), Status> {
        let role = role_of(method).unwrap_or(auth::Role::Mint);
        self.auth.check(req, role, method).map_err(status::auth)
    }

    /// Answers one batch message: invalid items fail alone, the rest go to
    /// the writer together.
    async fn batch_message(
        &self,
        msg: pb::BatchIssuePersonalIdsRequest,
    ) -> Result<pb::BatchIssuePersonalIdsResponse, Status> {
        if msg.items.len() > MAX_BATCH_ITEMS {
            // Refused item by item, as the contract answers every failure: the stream, and
            // the answers of the messages sent before this one, carry on.
            let refusal = status::to_rpc(&service_kit::status::invalid_argument(vec![(
                "items".into(),
                format!("at most {MAX_BATCH_ITEMS} items per message"),
            )]));
            let results = msg
                .items
                .into_iter()
                .map(|item| pb::BatchIssueResult {
                    request_id: item.request_id,
                    outcome: Some(pb::batch_issue_result::Outcome::Error(refusal.clone())),
                })
                .collect();
            return Ok(pb::BatchIssuePersonalIdsResponse { results });
        }
        metrics::histogram!("population_registry_batch_message_items")
            .record(msg.items.len() as f64);
        // Only the request ids outlive validation: each message's protobuf
        // data is freed before its items wait for the writer, which keeps
        // memory flat however many messages are in flight.
        let mut request_ids = Vec::with_capacity(msg.items.len());
        let mut parsed = Vec::with_capacity(msg.items.len());
        for (i, item) in msg.items.into_iter().enumerate() {
            let path = format!("items[{i}]");
            let under_item = |v: Vec<crate::domain::birth::Violation>| {
                v.into_iter().map(|v| v.under(&path)).collect::<Vec<_>>()
            };
            parsed.push(
                convert::issue_request(&item, &self.provinces)
                    .map(|mut req| {
                        req.refused_if_new = req.refused_if_new.take().map(under_item);
                        req
                    })
                    .map_err(under_item),
            );
            request_ids.push(item.request_id);
        }
        let mut outcomes: Vec<Option<Result<pb::IssuePersonalIdResponse, Status>>> =
            Vec::with_capacity(parsed.len());
        let mut valid: Vec<IssueRequest> = Vec::new();
        let mut valid_pos = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, parsed) in parsed.into_iter().enumerate() {
            // Every copy counts, valid or not: a key is served at most once per message.
            let repeated = !seen.insert(request_ids[i].as_str());
            match parsed {
                Ok(_) if repeated => {
                    outcomes.push(Some(Err(status::issue(IssueError::Invalid(vec![
                        crate::domain::birth::Violation::new(
                            format!("items[{i}].request_id"),
                            "appears more than once in this message",
                        ),
                    ])))));
                }
                Ok(req) => {
                    valid_pos.push(i);
                    valid.push(req);
                    outcomes.push(None);
                }
                Err(v) => outcomes.push(Some(Err(status::issue(IssueError::Invalid(v))))),
            }
        }
        drop(seen);
        if !valid.is_empty() {
            match self.store.issue(valid).await {
                Ok(results) => {
                    for (pos, r) in valid_pos.into_iter().zip(results) {
                        outcomes[pos] = Some(r.map(|i| convert::issued(&i)).map_err(status::issue));
                    }
                }
                Err(e) => {
                    let s = status::issue(e.into());
                    for pos in valid_pos {
                        outcomes[pos] = Some(Err(s.clone()));
                    }
                }
            }
        }
        let results = request_ids
            .into_iter()
            .zip(outcomes)
            .map(|(request_id, outcome)| pb::BatchIssueResult {
                request_id,
                outcome: Some(match outcome {
                    Some(Ok(issued)) => pb::batch_issue_result::Outcome::Issued(issued),
                    Some(Err(s)) => pb::batch_issue_result::Outcome::Error(status::to_rpc(&s)),
                    None => pb::batch_issue_result::Outcome::Error(status::to_rpc(
                        &Status::internal("item not processed"),
                    )),
                }),
            })
            .collect();
        Ok(pb::BatchIssuePersonalIdsResponse { results })
    }
}

type BatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::BatchIssuePersonalIdsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PopulationRegistryService for RegistryService {
    async fn issue_personal_id(
        &self,
        req: Request<pb::IssuePersonalIdRequest>,
    ) -> Result<Response<pb::IssuePersonalIdResponse>, Status> {
        self.allow(&req, "IssuePersonalId")?;
        let item = convert::issue_request(req.get_ref(), &self.provinces)
            .map_err(|v| status::issue(IssueError::Invalid(v)))?;
        let mut results = self
            .store
            .issue(vec![item])
            .await
            .map_err(|e| status::issue(e.into()))?;
        let issued = results
            .pop()
            .ok_or_else(|| Status::internal("no outcome"))?
            .map_err(status::issue)?;
        Ok(Response::new(convert::issued(&issued)))
    }

    type BatchIssuePersonalIdsStream = BatchStream;

    async fn batch_issue_personal_ids(
        &self,
        req: Request<Streaming<pb::BatchIssuePersonalIdsRequest>>,
    ) -> Result<Response<Self::BatchIssuePersonalIdsStream>, Status> {
        self.allow(&req, "BatchIssuePersonalIds")?;
        let svc = self.clone();
        let out = req
            .into_inner()
            .map(move |msg| {
                let svc = svc.clone();
                async move { svc.batch_message(msg?).await }
            })
            .buffered(BATCH_PIPELINE);
        Ok(Response::new(Box::pin(out)))
    }

    async fn get_citizen(
        &self,
        req: Request<pb::GetCitizenRequest>,
    ) -> Result<Response<pb::GetCitizenResponse>, Status> {
        self.allow(&req, "GetCitizen")?;
        let id = convert::personal_id(&req.get_ref().personal_id, "personal_id")
            .map_err(|v| status::lookup(LookupError::Invalid(v)))?;
        let citizen = self
            .store
            .citizen(id)
            .await
            .map_err(|e| status::lookup(e.into()))?
            .ok_or_else(|| status::lookup(LookupError::NotFound))?;
        Ok(Response::new(pb::GetCitizenResponse {
            citizen: Some(convert::citizen(&citizen)),
        }))
    }

    async fn find_citizen_by_registration(
        &self,
        req: Request<pb::FindCitizenByRegistrationRequest>,
    ) -> Result<Response<pb::FindCitizenByRegistrationResponse>, Status> {
        self.allow(&req, "FindCitizenByRegistration")?;
        let query = convert::registration_query(req.get_ref())
            .map_err(|v| status::lookup(LookupError::Invalid(v)))?;
        let found = self
            .store
            .find_by_registration(&query)
            .await
            .map_err(|e| status::lookup(e.into()))?;
        if found.is_empty() {
            return Err(status::lookup(LookupError::NotFound));
        }
        Ok(Response::new(pb::FindCitizenByRegistrationResponse {
            citizens: found.iter().map(convert::citizen).collect(),
        }))
    }

    async fn reissue_personal_id(
        &self,
        req: Request<pb::ReissuePersonalIdRequest>,
    ) -> Result<Response<pb::ReissuePersonalIdResponse>, Status> {
        self.allow(&req, "ReissuePersonalId")?;
        let cmd = convert::reissue_request(req.get_ref(), &self.provinces)
            .map_err(|v| status::reissue(ReissueError::Invalid(v)))?;
        let done = self.store.reissue(cmd).await.map_err(status::reissue)?;
        Ok(Response::new(convert::reissued(&done)))
    }

    async fn validate_personal_id(
        &self,
        req: Request<pb::ValidatePersonalIdRequest>,
    ) -> Result<Response<pb::ValidatePersonalIdResponse>, Status> {
        self.allow(&req, "ValidatePersonalId")?;
        let raw = &req.get_ref().personal_id;
        let state = match PersonalId::parse(raw) {
            Ok(id) if self.provinces.name(id.province()).is_some() => Some(
                self.store
                    .state(id)
                    .await
                    .map_err(|e| status::lookup(e.into()))?,
            ),
            _ => None,
        };
        Ok(Response::new(convert::validation(
            raw,
            &self.provinces,
            state,
        )))
    }

    async fn get_issuance_statistics(
        &self,
        req: Request<pb::GetIssuanceStatisticsRequest>,
    ) -> Result<Response<pb::GetIssuanceStatisticsResponse>, Status> {
        self.allow(&req, "GetIssuanceStatistics")?;
        let r = req.get_ref();
        let (range, filter) =
            convert::date_range(r.registered_from.as_ref(), r.registered_to.as_ref())
                .and_then(|range| {
                    Ok((
                        range,
                        convert::province_filter(&r.province_codes, &self.provinces)?,
                    ))
                })
                .map_err(|v| status::lookup(LookupError::Invalid(v)))?;
        let stats = self
            .store
            .statistics(range, &filter)
            .await
            .map_err(|e| status::lookup(e.into()))?;
        Ok(Response::new(convert::statistics(&stats, &self.provinces)))
    }

    async fn list_issuances(
        &self,
        req: Request<pb::ListIssuancesRequest>,
    ) -> Result<Response<pb::ListIssuancesResponse>, Status> {
        self.allow(&req, "ListIssuances")?;
        let r = req.get_ref();
        let (range, (size, after)) =
            convert::date_range(r.registered_from.as_ref(), r.registered_to.as_ref())
                .and_then(|range| Ok((range, convert::page(r.page_size, &r.page_token)?)))
                .map_err(|v| status::lookup(LookupError::Invalid(v)))?;
        let page = self
            .store
            .issuances(range, after, size)
            .await
            .map_err(|e| status::lookup(e.into()))?;
        Ok(Response::new(pb::ListIssuancesResponse {
            issuances: page.issuances.iter().map(convert::issuance).collect(),
            next_page_token: convert::page_token(page.next_after),
        }))
    }
}
