//! The kit's tiny Echo gRPC service (`kit.echo.v1.EchoService`): the test service of the
//! kit's own tests and the bare-transport baseline benchmarks compare the services with.

use std::time::Duration;

/// Generated messages, client and server of `kit.echo.v1`.
pub mod pb {
    #![allow(missing_docs, missing_debug_implementations, unreachable_pub)]
    tonic::include_proto!("kit.echo.v1");
}

pub use pb::{
    EchoRequest, EchoResponse,
    echo_service_client::EchoServiceClient,
    echo_service_server::{EchoService, EchoServiceServer},
};

/// Encoded descriptor set of `kit.echo.v1`, for [`crate::server::GrpcServer::bind`].
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/echo_descriptor_set.bin"));

/// Longest accepted `delay_ms`: a test hook must not let a caller park a call forever.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// The Echo implementation: echoes, optionally after a delay or with a chosen error.
#[derive(Clone, Copy, Debug, Default)]
pub struct EchoServer;

impl EchoServer {
    /// The tonic service to pass to `GrpcServer::add_service`.
    pub fn service() -> EchoServiceServer<EchoServer> {
        EchoServiceServer::new(EchoServer)
    }
}

#[tonic::async_trait]
impl EchoService for EchoServer {
    async fn echo(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoResponse>, tonic::Status> {
        let client_identity = crate::tls::client_identity(&request)
            .map(|identity| {
                identity
                    .common_name
                    .clone()
                    .unwrap_or_else(|| identity.subject.clone())
            })
            .unwrap_or_default();
        let request = request.into_inner();
        if request.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(request.delay_ms.into()).min(MAX_DELAY)).await;
        }
        if request.fail_with_code != 0 {
            let code = tonic::Code::from_i32(request.fail_with_code);
            return Err(tonic::Status::new(code, "failure requested by the caller"));
        }
        Ok(tonic::Response::new(EchoResponse {
            message: request.message,
            payload: request.payload,
            client_identity,
            trace_id: crate::telemetry::current_trace_id().unwrap_or_default(),
        }))
    }
}
