//! A fake population registry: the mps.population.v1 contract served over real gRPC on
//! 127.0.0.1:0, recording what it receives, able to go down and come back, and to refuse.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use contracts::mps::population::v1 as pop;
use pop::population_registry_service_server::{
    PopulationRegistryService, PopulationRegistryServiceServer,
};
use prost::Message;
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status, Streaming};

#[derive(Debug, Clone)]
pub struct Issued {
    pub personal_id: String,
    pub content: Vec<u8>,
    pub record: pop::BirthRecord,
    pub active: bool,
    pub replaced_by: String,
}

#[derive(Debug, Default)]
pub struct State {
    pub down: bool,
    /// How long each batch message waits before it is answered.
    pub answer_delay: std::time::Duration,
    /// Refuse records whose child's name is this, with this code.
    pub reject_name: Option<(String, Code)>,
    /// Mint for such a record before refusing it: as when the first answer was lost and
    /// the retry landed on a replica that refuses the same record (its clock behind).
    pub mint_before_refusing: bool,
    pub by_key: HashMap<String, Issued>,
    /// Every request received: (key, encoded content).
    pub received: Vec<(String, Vec<u8>)>,
    /// Same key, different content (must stay 0).
    pub conflicts: usize,
    pub batch_calls: usize,
    pub next: u64,
    /// Connections accepted.
    pub connections: usize,
    /// Calls refused while down.
    pub refused_while_down: usize,
}

#[derive(Debug, Clone, Default)]
pub struct FakePopulation {
    pub state: Arc<Mutex<State>>,
}

fn number(state: &mut State, record: &pop::BirthRecord) -> String {
    state.next += 1;
    let year = record.date_of_birth.map(|d| d.year).unwrap_or(2000);
    let century = ((year - 1900) / 100) * 2
        + if record.sex == pop::Sex::Female as i32 {
            1
        } else {
            0
        };
    format!(
        "{}{}{:02}{:06}",
        record.registration_province_code,
        century,
        year % 100,
        state.next
    )
}

impl FakePopulation {
    pub async fn serve() -> (Self, SocketAddr) {
        let fake = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let svc = PopulationRegistryServiceServer::new(fake.clone());
        let state = Arc::clone(&fake.state);
        let incoming =
            tokio_stream::wrappers::TcpListenerStream::new(listener).map(move |connection| {
                state.lock().unwrap().connections += 1;
                connection
            });
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await;
        });
        (fake, addr)
    }

    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    /// Answers each batch message only after `delay` (a registry under load).
    pub fn set_answer_delay(&self, delay: std::time::Duration) {
        self.state.lock().unwrap().answer_delay = delay;
    }

    pub fn reject_name(&self, name: &str, code: Code) {
        self.state.lock().unwrap().reject_name = Some((name.to_owned(), code));
    }

    /// Mints for records with this child's name, then answers with `code` as if refusing.
    pub fn mint_then_refuse_name(&self, name: &str, code: Code) {
        let mut state = self.state.lock().unwrap();
        state.reject_name = Some((name.to_owned(), code));
        state.mint_before_refusing = true;
    }

    /// Refuses nothing by name any more (a refusal that no longer applies).
    pub fn accept_every_name(&self) {
        let mut state = self.state.lock().unwrap();
        state.reject_name = None;
        state.mint_before_refusing = false;
    }

    /// Forgets the citizen holding `personal_id`, as a registry restored from an older
    /// backup would.
    pub fn lose_citizen(&self, personal_id: &str) {
        let mut state = self.state.lock().unwrap();
        state
            .by_key
            .retain(|_, issued| issued.personal_id != personal_id);
    }

    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    /// Calls refused while down (the relay's failed attempts).
    pub fn refused_while_down(&self) -> usize {
        self.state.lock().unwrap().refused_while_down
    }

    pub fn received(&self) -> usize {
        self.state.lock().unwrap().received.len()
    }

    pub fn conflicts(&self) -> usize {
        self.state.lock().unwrap().conflicts
    }

    /// Distinct keys received, each with how many distinct contents.
    pub fn distinct_contents_per_key(&self) -> HashMap<String, usize> {
        let state = self.state.lock().unwrap();
        let mut out: HashMap<String, std::collections::HashSet<Vec<u8>>> = HashMap::new();
        for (k, c) in &state.received {
            out.entry(k.clone()).or_default().insert(c.clone());
        }
        out.into_iter().map(|(k, v)| (k, v.len())).collect()
    }

    fn issue(
        &self,
        req: &pop::IssuePersonalIdRequest,
    ) -> Result<pop::IssuePersonalIdResponse, Status> {
        let mut state = self.state.lock().unwrap();
        if state.down {
            state.refused_while_down += 1;
            return Err(Status::unavailable("down for maintenance"));
        }
        let content = req.encode_to_vec();
        state
            .received
            .push((req.request_id.clone(), content.clone()));
        let record = req.birth.clone().unwrap_or_default();
        if let Some((name, code)) = state.reject_name.clone()
            && record.full_name == name
        {
            if state.mint_before_refusing && !state.by_key.contains_key(&req.request_id) {
                let personal_id = number(&mut state, &record);
                state.by_key.insert(
                    req.request_id.clone(),
                    Issued {
                        personal_id,
                        content,
                        record,
                        active: true,
                        replaced_by: String::new(),
                    },
                );
            }
            return Err(service_kit::status::with_reason(
                code,
                "refused by the fake",
                "population.mps.gov.vn",
                "FAKE_REFUSAL",
            ));
        }
        if let Some(existing) = state.by_key.get(&req.request_id) {
            if existing.content != content {
                let pid = existing.personal_id.clone();
                state.conflicts += 1;
                let _ = pid;
                return Err(service_kit::status::with_reason(
                    Code::AlreadyExists,
                    "key reused",
                    "population.mps.gov.vn",
                    "IDEMPOTENCY_KEY_REUSED",
                ));
            }
            return Ok(pop::IssuePersonalIdResponse {
                personal_id: existing.personal_id.clone(),
                newly_issued: false,
                ..Default::default()
            });
        }
        let personal_id = number(&mut state, &record);
        state.by_key.insert(
            req.request_id.clone(),
            Issued {
                personal_id: personal_id.clone(),
                content,
                record,
                active: true,
                replaced_by: String::new(),
            },
        );
        Ok(pop::IssuePersonalIdResponse {
            personal_id,
            newly_issued: true,
            ..Default::default()
        })
    }
}

fn citizen(key: &str, i: &Issued) -> pop::Citizen {
    pop::Citizen {
        personal_id: i.personal_id.clone(),
        birth: Some(i.record.clone()),
        status: if i.active {
            pop::CitizenStatus::Active
        } else {
            pop::CitizenStatus::Cancelled
        } as i32,
        replaced_by: i.replaced_by.clone(),
        request_id: key.to_owned(),
        ..Default::default()
    }
}

type BatchStream =
    Pin<Box<dyn Stream<Item = Result<pop::BatchIssuePersonalIdsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PopulationRegistryService for FakePopulation {
    async fn issue_personal_id(
        &self,
        request: Request<pop::IssuePersonalIdRequest>,
    ) -> Result<Response<pop::IssuePersonalIdResponse>, Status> {
        self.issue(request.get_ref()).map(Response::new)
    }

    type BatchIssuePersonalIdsStream = BatchStream;

    async fn batch_issue_personal_ids(
        &self,
        request: Request<Streaming<pop::BatchIssuePersonalIdsRequest>>,
    ) -> Result<Response<Self::BatchIssuePersonalIdsStream>, Status> {
        {
            let mut state = self.state.lock().unwrap();
            if state.down {
                state.refused_while_down += 1;
                return Err(Status::unavailable("down for maintenance"));
            }
        }
        self.state.lock().unwrap().batch_calls += 1;
        let this = self.clone();
        let mut inbound = request.into_inner();
        let out = async_stream_like(move |tx| async move {
            while let Some(Ok(message)) = inbound.next().await {
                let delay = this.state.lock().unwrap().answer_delay;
                tokio::time::sleep(delay).await;
                let results = message
                    .items
                    .iter()
                    .map(|item| pop::BatchIssueResult {
                        request_id: item.request_id.clone(),
                        outcome: Some(match this.issue(item) {
                            Ok(r) => pop::batch_issue_result::Outcome::Issued(r),
                            Err(status) => {
                                let encoded =
                                    contracts::google::rpc::Status::decode(status.details())
                                        .unwrap_or(contracts::google::rpc::Status {
                                            code: status.code() as i32,
                                            message: status.message().to_owned(),
                                            details: vec![],
                                        });
                                pop::batch_issue_result::Outcome::Error(encoded)
                            }
                        }),
                    })
                    .collect();
                if tx
                    .send(Ok(pop::BatchIssuePersonalIdsResponse { results }))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn get_citizen(
        &self,
        _: Request<pop::GetCitizenRequest>,
    ) -> Result<Response<pop::GetCitizenResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn find_citizen_by_registration(
        &self,
        request: Request<pop::FindCitizenByRegistrationRequest>,
    ) -> Result<Response<pop::FindCitizenByRegistrationResponse>, Status> {
        let state = self.state.lock().unwrap();
        let prefix = &request.get_ref().request_id;
        let citizens: Vec<_> = state
            .by_key
            .iter()
            .filter(|(k, _)| k.split(':').next() == Some(prefix.as_str()))
            .map(|(k, i)| citizen(k, i))
            .collect();
        if citizens.is_empty() {
            return Err(Status::not_found("none"));
        }
        Ok(Response::new(pop::FindCitizenByRegistrationResponse {
            citizens,
        }))
    }

    async fn reissue_personal_id(
        &self,
        request: Request<pop::ReissuePersonalIdRequest>,
    ) -> Result<Response<pop::ReissuePersonalIdResponse>, Status> {
        let req = request.into_inner();
        let mut state = self.state.lock().unwrap();
        if state.down {
            state.refused_while_down += 1;
            return Err(Status::unavailable("down"));
        }
        let content = req.encode_to_vec();
        state
            .received
            .push((req.request_id.clone(), content.clone()));
        let name = req.corrected_birth.as_ref().map(|b| b.full_name.as_str());
        if let Some((refused, code)) = &state.reject_name
            && name == Some(refused.as_str())
        {
            return Err(service_kit::status::with_reason(
                *code,
                "refused by the fake",
                "population.mps.gov.vn",
                "FAKE_REFUSAL",
            ));
        }
        if let Some(existing) = state.by_key.get(&req.request_id) {
            if existing.content != content {
                state.conflicts += 1;
                return Err(Status::already_exists("key reused"));
            }
            return Ok(Response::new(pop::ReissuePersonalIdResponse {
                personal_id: existing.personal_id.clone(),
                cancelled_personal_id: req.personal_id,
                ..Default::default()
            }));
        }
        let Some((old_key, active)) = state
            .by_key
            .iter()
            .find(|(_, i)| i.personal_id == req.personal_id)
            .map(|(k, i)| (k.clone(), i.active))
        else {
            return Err(service_kit::status::with_reason(
                Code::NotFound,
                "no citizen holds this number",
                "population.mps.gov.vn",
                "CITIZEN_NOT_FOUND",
            ));
        };
        if !active {
            return Err(service_kit::status::with_reason(
                Code::FailedPrecondition,
                "the number is no longer active",
                "population.mps.gov.vn",
                "PERSONAL_ID_CANCELLED",
            ));
        }
        let record = req.corrected_birth.clone().unwrap_or_default();
        let personal_id = number(&mut state, &record);
        if let Some(old) = state.by_key.get_mut(&old_key) {
            old.active = false;
            old.replaced_by = personal_id.clone();
        }
        state.by_key.insert(
            req.request_id.clone(),
            Issued {
                personal_id: personal_id.clone(),
                content,
                record,
                active: true,
                replaced_by: String::new(),
            },
        );
        Ok(Response::new(pop::ReissuePersonalIdResponse {
            personal_id,
            cancelled_personal_id: req.personal_id,
            newly_issued: true,
            ..Default::default()
        }))
    }

    async fn validate_personal_id(
        &self,
        _: Request<pop::ValidatePersonalIdRequest>,
    ) -> Result<Response<pop::ValidatePersonalIdResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn get_issuance_statistics(
        &self,
        _: Request<pop::GetIssuanceStatisticsRequest>,
    ) -> Result<Response<pop::GetIssuanceStatisticsResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn list_issuances(
        &self,
        _: Request<pop::ListIssuancesRequest>,
    ) -> Result<Response<pop::ListIssuancesResponse>, Status> {
        let state = self.state.lock().unwrap();
        let mut issuances: Vec<_> = state
            .by_key
            .iter()
            .map(|(k, i)| pop::Issuance {
                personal_id: i.personal_id.clone(),
                request_id: k.clone(),
                registration: i.record.registration.clone(),
                status: if i.active {
                    pop::CitizenStatus::Active
                } else {
                    pop::CitizenStatus::Cancelled
                } as i32,
                replaced_by: i.replaced_by.clone(),
                issue_time: None,
            })
            .collect();
        issuances.sort_by(|a, b| a.personal_id.cmp(&b.personal_id));
        Ok(Response::new(pop::ListIssuancesResponse {
            issuances,
            next_page_token: String::new(),
        }))
    }
}

/// A stream fed by a task through a channel (avoids a dependency on async-stream).
fn async_stream_like<F, Fut>(
    f: F,
) -> impl Stream<Item = Result<pop::BatchIssuePersonalIdsResponse, Status>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pop::BatchIssuePersonalIdsResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
