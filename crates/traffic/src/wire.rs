//! The replay's RegisterBirth on the wire: the request encoded once, ahead of the clock,
//! and the answer decoded into the three fields the replay reads.
//!
//! The replayer shares the machine's cores with the services it measures, so every
//! microsecond it spends per call is taken from them: encoding each request as it is sent
//! (and again on a retry) and decoding the whole registration it answers, with every
//! name's UTF-8 check and allocation, is work the measurement does not need. The services
//! see the same bytes either way.

use contracts::moj::civilstatus::v1 as pb;
use prost::bytes::{BufMut as _, Bytes};
use tonic::client::Grpc;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// `RegisterBirth`'s path on the wire.
pub const REGISTER_BIRTH_PATH: &str = "/moj.civilstatus.v1.BirthRegistrationService/RegisterBirth";

/// `RegisterBirthResponse` with only the registration fields the replay reads; prost skips
/// the others without decoding them. The tags are the contract's.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisterAnswer {
    #[prost(message, optional, tag = "1")]
    pub registration: Option<RegistrationAnswer>,
}

/// The fields of `BirthRegistration` the replay reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RegistrationAnswer {
    /// `birthRegistrations/{id}`.
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(enumeration = "pb::PersonalIdStatus", tag = "14")]
    pub personal_id_status: i32,
    #[prost(string, tag = "15")]
    pub personal_id: String,
}

impl From<pb::BirthRegistration> for RegistrationAnswer {
    fn from(r: pb::BirthRegistration) -> Self {
        Self {
            name: r.name,
            personal_id_status: r.personal_id_status,
            personal_id: r.personal_id,
        }
    }
}

/// Calls `RegisterBirth` with an encoded request.
pub async fn register_birth(
    grpc: &mut Grpc<Channel>,
    request: tonic::Request<Bytes>,
) -> Result<RegisterAnswer, tonic::Status> {
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(format!("service was not ready: {e}")))?;
    let path = PathAndQuery::from_static(REGISTER_BIRTH_PATH);
    Ok(grpc.unary(request, path, RegisterCodec).await?.into_inner())
}

/// Sends encoded requests as they are and decodes [`RegisterAnswer`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct RegisterCodec;

impl Codec for RegisterCodec {
    type Encode = Bytes;
    type Decode = RegisterAnswer;
    type Encoder = EncodedRequest;
    type Decoder = tonic_prost::ProstDecoder<RegisterAnswer>;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedRequest
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

/// Writes an already encoded message.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodedRequest;

impl Encoder for EncodedRequest {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn full_answer() -> pb::RegisterBirthResponse {
        pb::RegisterBirthResponse {
            registration: Some(pb::BirthRegistration {
                name: "birthRegistrations/0190a5c4-7d2e-7c1b-9f00-000000000001".into(),
                id: "0190a5c4-7d2e-7c1b-9f00-000000000001".into(),
                registration_number: 42,
                book_number: "01/2016".into(),
                unit_code: "00004".into(),
                official_id: "off-1".into(),
                personal_id_status: pb::PersonalIdStatus::Issued as i32,
                personal_id: "001216000123".into(),
                ineligibility_reasons: vec![1, 2],
                eligibility_rule_version: "2016.1".into(),
                child: Some(pb::Child {
                    full_name: "Nguyễn Thị An".into(),
                    home_town: "Hà Nội".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn the_slim_answer_reads_the_same_fields_as_the_contract() {
        let full = full_answer();
        let slim = RegisterAnswer::decode(full.encode_to_vec().as_slice()).unwrap();
        let reg = full.registration.unwrap();
        assert_eq!(slim.registration, Some(RegistrationAnswer::from(reg)));
        let slim_reg = slim.registration.unwrap();
        assert_eq!(slim_reg.personal_id, "001216000123");
        assert_eq!(
            slim_reg.personal_id_status,
            pb::PersonalIdStatus::Issued as i32
        );
    }
}
