//! `verify` against fake registries that answer what real ones never could (their
//! databases refuse a number twice): the checks that guard the "no number twice"
//! invariants must still report it, should a registry's implementation ever let one by.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use contracts::moj::civilstatus::v1 as cs;
use contracts::moj::civilstatus::v1::birth_registration_service_server::{
    BirthRegistrationService, BirthRegistrationServiceServer,
};
use contracts::mps::population::v1 as pop;
use contracts::mps::population::v1::population_registry_service_server::{
    PopulationRegistryService, PopulationRegistryServiceServer,
};
use tonic::{Request, Response, Status};
use traffic::client::{ClientTls, connect_channels};
use traffic::generate::{Outputs, generate_files};
use traffic::profile::ProfileName;
use traffic::verify::{Expectation, Targets, verify};

/// Two ISSUED registrations showing one number and one register entry; counts the
/// listings it serves.
struct Civil {
    listings: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl BirthRegistrationService for Civil {
    async fn register_birth(
        &self,
        _: Request<cs::RegisterBirthRequest>,
    ) -> Result<Response<cs::RegisterBirthResponse>, Status> {
        Err(Status::unimplemented("not part of the fake"))
    }

    async fn get_birth_registration(
        &self,
        _: Request<cs::GetBirthRegistrationRequest>,
    ) -> Result<Response<cs::GetBirthRegistrationResponse>, Status> {
        Err(Status::unimplemented("not part of the fake"))
    }

    async fn list_birth_registrations(
        &self,
        _: Request<cs::ListBirthRegistrationsRequest>,
    ) -> Result<Response<cs::ListBirthRegistrationsResponse>, Status> {
        self.listings.fetch_add(1, Ordering::SeqCst);
        let issued = |id: &str| cs::BirthRegistration {
            name: format!("birthRegistrations/{id}"),
            id: id.into(),
            personal_id_status: cs::PersonalIdStatus::Issued as i32,
            personal_id: "001216000001".into(),
            register_unit_code: "00004".into(),
            book_number: "01/2016".into(),
            registration_number: 7,
            ..Default::default()
        };
        Ok(Response::new(cs::ListBirthRegistrationsResponse {
            registrations: vec![issued("a"), issued("b")],
            next_page_token: String::new(),
        }))
    }

    async fn correct_birth_registration(
        &self,
        _: Request<cs::CorrectBirthRegistrationRequest>,
    ) -> Result<Response<cs::CorrectBirthRegistrationResponse>, Status> {
        Err(Status::unimplemented("not part of the fake"))
    }

    async fn get_registration_statistics(
        &self,
        _: Request<cs::GetRegistrationStatisticsRequest>,
    ) -> Result<Response<cs::GetRegistrationStatisticsResponse>, Status> {
        Ok(Response::new(
            cs::GetRegistrationStatisticsResponse::default(),
        ))
    }
}

/// One number minted for two requests, and one request holding two active numbers; or,
/// when `refuses_reads`, a registry that does not have the caller on its read allow-list.
struct Population {
    refuses_reads: bool,
}

type Answers = Pin<
    Box<dyn tokio_stream::Stream<Item = Result<pop::BatchIssuePersonalIdsResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl PopulationRegistryService for Population {
    type BatchIssuePersonalIdsStream = Answers;

    async fn issue_personal_id(
        &self,
        _: Request<pop::IssuePersonalIdRequest>,
    ) -> Result<Response<pop::IssuePersonalIdResponse>, Status> {
        Err(Status::unimplemented("not part of the fake"))
    }

    async fn batch_issue_personal_ids(
        &self,
        _: Request<tonic::Streaming<pop::BatchIssuePersonalIdsRequest>>,
    ) -> Result<Response<Answers>, Status> {
        Err(Status::unimplemented("not part of the fake"))
    }

    async fn get_citizen(
        &self,
        _: Request<pop::GetCitizenRequest>,
    ) -> Result<Response<pop::GetCitizenResponse>, Status> {
        Err(Status::unimplemented("not part of the fake"))
    }

    async fn find_citizen_by_registration(
        &self,
        _: Request<pop::FindCitizenByRegistrationRequest>,
    ) -> Result<Response<pop::FindCitizenByRegistrationResponse>, Status> {
        Err(Status::unimplemented("not part of the fake"))
    }

    async fn reissue_personal_id(
        &self,
        _: Request<pop::ReissuePersonalIdRequest>,
    ) -> Result<Response<pop::ReissuePersonalIdResponse>, Status> {
        Err(Status::unimplemented("not part of the fake"))
    }

    async fn validate_personal_id(
        &self,
        _: Request<pop::ValidatePersonalIdRequest>,
    ) -> Result<Response<pop::ValidatePersonalIdResponse>, Status> {
        Err(Status::unimplemented("not part of the fake"))
    }

    async fn get_issuance_statistics(
        &self,
        _: Request<pop::GetIssuanceStatisticsRequest>,
    ) -> Result<Response<pop::GetIssuanceStatisticsResponse>, Status> {
        if self.refuses_reads {
            return Err(Status::permission_denied("caller not allowed"));
        }
        Ok(Response::new(pop::GetIssuanceStatisticsResponse::default()))
    }

    async fn list_issuances(
        &self,
        _: Request<pop::ListIssuancesRequest>,
    ) -> Result<Response<pop::ListIssuancesResponse>, Status> {
        let active = |number: &str, request_id: &str| pop::Issuance {
            personal_id: number.into(),
            request_id: request_id.into(),
            status: pop::CitizenStatus::Active as i32,
            ..Default::default()
        };
        Ok(Response::new(pop::ListIssuancesResponse {
            issuances: vec![
                active("001216000001", "a"),
                active("001216000001", "b"),
                active("001216000002", "c"),
                active("001216000003", "c"),
            ],
            next_page_token: String::new(),
        }))
    }
}

async fn serve(router: tonic::transport::server::Router) -> String {
    let incoming =
        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    tokio::spawn(router.serve_with_incoming(incoming));
    addr.to_string()
}

/// The fake registries above, what a small generated pilot expects of them, and the
/// count of the civil registry's listings.
async fn arranged(
    population: Population,
) -> (tempfile::TempDir, Expectation, Targets, Arc<AtomicUsize>) {
    let dir = tempfile::tempdir().unwrap();
    let outputs = Outputs::next_to(&dir.path().join("t.ndjson"));
    let (plan, _) = generate_files(ProfileName::Pilot2016, 4, 0.001, &outputs).unwrap();
    let provinces: HashMap<String, String> = plan
        .units
        .iter()
        .map(|u| (u.code.clone(), u.province_code.clone()))
        .collect();
    let expect = Expectation::read(&outputs.traffic, &provinces, None).unwrap();
    let plaintext = ClientTls {
        insecure: true,
        ..ClientTls::default()
    };
    let listings = Arc::new(AtomicUsize::new(0));
    let civil = serve(tonic::transport::Server::builder().add_service(
        BirthRegistrationServiceServer::new(Civil {
            listings: listings.clone(),
        }),
    ))
    .await;
    let population = serve(
        tonic::transport::Server::builder()
            .add_service(PopulationRegistryServiceServer::new(population)),
    )
    .await;
    let targets = Targets {
        civil: connect_channels(&civil, &plaintext, 1)
            .await
            .unwrap()
            .remove(0),
        civil_auth: "Bearer any".parse().unwrap(),
        population: connect_channels(&population, &plaintext, 1)
            .await
            .unwrap()
            .remove(0),
    };
    (dir, expect, targets, listings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_shown_twice_minted_twice_or_active_twice_or_an_entry_held_twice_is_reported() {
    // Arrange
    let (_dir, expect, targets, _) = arranged(Population {
        refuses_reads: false,
    })
    .await;

    // Act
    let report = verify(&targets, &expect, None, Duration::from_secs(1))
        .await
        .unwrap();

    // Assert
    let of_kind = |kind: &str| {
        report
            .violations
            .iter()
            .filter(|v| v.starts_with(&format!("{kind}: ")))
            .count()
    };
    for kind in [
        "number-twice",
        "minted-twice",
        "two-active-numbers",
        "entry-twice",
    ] {
        assert_eq!(of_kind(kind), 1, "{kind}: {:#?}", report.violations);
    }
}

/// A tester's first run often lacks the population registry's read permission: verify
/// says so first, naming the setting, before listing and waiting for numbers to settle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_population_registry_that_refuses_the_reader_is_reported_at_once_with_the_fix() {
    // Arrange
    let (_dir, expect, targets, listings) = arranged(Population {
        refuses_reads: true,
    })
    .await;

    // Act
    let error = verify(&targets, &expect, None, Duration::from_secs(600))
        .await
        .expect_err("refused");

    // Assert
    let message = format!("{error:#}");
    assert!(message.contains("auth.read_allowed"), "{message}");
    assert_eq!(
        listings.load(Ordering::SeqCst),
        0,
        "refused before the civil registry was listed and its numbers waited for"
    );
}
