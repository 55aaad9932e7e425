#!/usr/bin/env python3
"""Both registries called from Python, as another government system calls them.

It compiles the public contracts under proto/ with grpcio-tools (no generated code is
committed), then over TLS:

  1. asks both services' grpc.health.v1 for the whole server;
  2. registers a birth on the civil registry with an official's bearer token and gets its
     12-digit number (waiting for it when the answer is PENDING);
  3. sends the same request_id again: the same registration and number come back;
  4. sends a birth whose child has no name: INVALID_ARGUMENT, with a google.rpc.BadRequest
     in the status details that names the field `child.full_name`;
  5. with a client certificate on the population registry's read allow-list, decodes the
     number (ValidatePersonalId) and reads the citizen record (GetCitizen);
  6. with a certificate on its minting allow-list (optional, as a national backfill would),
     streams BatchIssuePersonalIds: a valid record gets a number, an invalid one its own
     google.rpc.Status with a BadRequest, and the valid one sent again the same number.

It writes a registration and mints a number: run it against a test deployment, never
against the live register. Any broken expectation exits non-zero with the reason. On success it prints one JSON line
with what it saw, for tests/tests/interop.rs to check against the services' own state.

    pip install -r tests/interop/python/requirements.txt
    python3 tests/interop/python/registry_client.py \
        --civil civil.example.gov.vn:443 --population population.example.gov.vn:443 \
        --ca ca.pem --cert reader.pem --key reader-key.pem --server-name localhost

The official's bearer token comes from the environment (OFFICIAL_TOKEN), never the command
line, which other users of the machine can read: the secret as `civil-registry admin
officials create` prints it, with or without the `Bearer ` prefix. Personal data stays out of the output: only the
registration's resource name and the number are printed.
"""

import argparse
import importlib
import json
import os
import pathlib
import sys
import tempfile
import time
import unicodedata
import uuid

import grpc
from google.rpc import error_details_pb2
from google.type import date_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from grpc_tools import protoc

REPO = pathlib.Path(__file__).resolve().parents[3]
CONTRACTS = ["moj/civilstatus/v1/birth_registration.proto", "mps/population/v1/population_registry.proto"]
CHILD_NAME = "Nguyễn Văn An"


class Broken(Exception):
    """An expectation about the services that did not hold."""


def expect(condition, what):
    if not condition:
        raise Broken(what)


def compile_contracts(proto_dir, out_dir):
    """Generates the Python messages and stubs of the two services into `out_dir`.

    google.type.Date and google.rpc.Status come from googleapis-common-protos, the
    definitions proto/google/ copies, so only the ministries' files are generated."""
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"]
    if protoc.main(args + CONTRACTS) != 0:
        raise Broken(f"protoc could not compile {CONTRACTS} from {proto_dir}")
    sys.path.insert(0, str(out_dir))
    civil = importlib.import_module("moj.civilstatus.v1.birth_registration_pb2")
    civil_grpc = importlib.import_module("moj.civilstatus.v1.birth_registration_pb2_grpc")
    population = importlib.import_module("mps.population.v1.population_registry_pb2")
    population_grpc = importlib.import_module("mps.population.v1.population_registry_pb2_grpc")
    return civil, civil_grpc, population, population_grpc


def channel(target, ca, server_name, cert=None, key=None):
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=key,
        certificate_chain=cert,
    )
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(target, credentials, options=options)


def birth_request(civil, request_id, child_name):
    def parent(name, year):
        return civil.Parent(
            full_name=name,
            year_of_birth=year,
            ethnicity="Kinh",
            nationality="VN",
            residence="Phường Hàng Bạc, Hoàn Kiếm, Hà Nội",
        )

    return civil.RegisterBirthRequest(
        request_id=request_id,
        kind=civil.REGISTRATION_KIND_FIRST_TIME,
        child=civil.Child(
            full_name=child_name,
            sex=civil.SEX_MALE,
            date_of_birth=date_pb2.Date(year=2016, month=3, day=1),
            place_of_birth=civil.PlaceOfBirth(description="Bệnh viện Phụ sản Hà Nội", province_code="001"),
            home_town="Hà Nội",
            ethnicity="Kinh",
            nationality="VN",
        ),
        father=parent("Nguyễn Văn Bình", 1988),
        mother=parent("Trần Thị Cúc", 1990),
        requester=civil.Requester(full_name="Nguyễn Văn Bình", relationship=civil.RELATIONSHIP_FATHER),
        registered_on=date_pb2.Date(year=2016, month=3, day=10),
    )


def backfill_record(population, registration_number, nationality):
    return population.BirthRecord(
        full_name="Lê Thị Hoa",
        sex=population.SEX_FEMALE,
        date_of_birth=date_pb2.Date(year=2016, month=2, day=1),
        place_of_birth=population.PlaceOfBirth(description="Bệnh viện Bạch Mai", province_code="001"),
        registration_province_code="001",
        home_town="Hà Nội",
        ethnicity="Kinh",
        nationality=nationality,
        mother=population.Parent(full_name="Phạm Thị Lan", year_of_birth=1987, ethnicity="Kinh", nationality="VN"),
        registration=population.RegistrationReference(
            unit_code="PY-BACKFILL",
            registration_number=registration_number,
            book_number="01/2016",
            registration_date=date_pb2.Date(year=2016, month=2, day=15),
        ),
    )


def details_fields(status):
    """The fields a google.rpc.Status's BadRequest names."""
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields.extend(v.field for v in bad_request.field_violations)
    return fields


def backfill(population, stub):
    """Two items in one stream message, then the valid one again in a second message."""
    run = uuid.uuid4().hex[:12]
    valid = population.IssuePersonalIdRequest(
        request_id=f"py-backfill-{run}-1", birth=backfill_record(population, 1, "VN")
    )
    invalid = population.IssuePersonalIdRequest(
        request_id=f"py-backfill-{run}-2", birth=backfill_record(population, 2, "Vietnam")
    )
    messages = [
        population.BatchIssuePersonalIdsRequest(items=[valid, invalid]),
        population.BatchIssuePersonalIdsRequest(items=[valid]),
    ]
    answers = list(stub.BatchIssuePersonalIds(iter(messages), timeout=30))
    expect(len(answers) == 2, f"{len(answers)} answer messages for 2 request messages")
    first, second = answers[0].results, answers[1].results
    expect([r.request_id for r in first] == [valid.request_id, invalid.request_id], "results out of order")
    expect(first[0].WhichOneof("outcome") == "issued", "the valid record got no number")
    number = first[0].issued.personal_id
    expect(len(number) == 12 and first[0].issued.newly_issued, "the valid record's number is not new")
    expect(first[1].WhichOneof("outcome") == "error", "the invalid record got a number")
    expect(first[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], f"item error code {first[1].error.code}")
    invalid_fields = details_fields(first[1].error)
    expect("items[1].birth.nationality" in invalid_fields, f"the item's BadRequest names {invalid_fields}")
    expect(second[0].issued.personal_id == number, "the same request_id got another number")
    expect(not second[0].issued.newly_issued, "the repeated item was issued anew")
    return {"backfill_personal_id": number, "backfill_invalid_fields": sorted(set(invalid_fields))}


def check_health(name, chan):
    reply = health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    expect(reply.status == health_pb2.HealthCheckResponse.SERVING, f"{name} health is {reply.status}, not SERVING")


def register(civil, stub, auth, request):
    registration = stub.RegisterBirth(request, metadata=auth, timeout=20).registration
    deadline = time.monotonic() + 20
    while registration.personal_id_status == civil.PERSONAL_ID_STATUS_PENDING and time.monotonic() < deadline:
        time.sleep(0.1)
        registration = stub.GetBirthRegistration(
            civil.GetBirthRegistrationRequest(name=registration.name), metadata=auth, timeout=20
        ).registration
    return registration


def field_violations(error):
    """The fields a failed call's google.rpc.BadRequest names."""
    status = rpc_status.from_call(error)
    expect(status is not None, f"{error.code()} came without google.rpc.Status details")
    return details_fields(status)


def run(args):
    ca = pathlib.Path(args.ca).read_bytes()
    cert = pathlib.Path(args.cert).read_bytes()
    key = pathlib.Path(args.key).read_bytes()
    token = os.environ.get("OFFICIAL_TOKEN", "").strip()
    expect(token, "set OFFICIAL_TOKEN to an official's bearer token")
    token = token if token.startswith("Bearer ") else f"Bearer {token}"
    auth = [("authorization", token)]
    with tempfile.TemporaryDirectory(prefix="registry-contracts-") as out_dir:
        civil, civil_grpc, population, population_grpc = compile_contracts(args.proto, out_dir)
        civil_channel = channel(args.civil, ca, args.server_name)
        population_channel = channel(args.population, ca, args.server_name, cert, key)
        check_health("civil registry", civil_channel)
        check_health("population registry", population_channel)
        civil_stub = civil_grpc.BirthRegistrationServiceStub(civil_channel)
        population_stub = population_grpc.PopulationRegistryServiceStub(population_channel)

        # A birth registered, with its number.
        request = birth_request(civil, str(uuid.uuid4()), CHILD_NAME)
        registration = register(civil, civil_stub, auth, request)
        expect(
            registration.personal_id_status == civil.PERSONAL_ID_STATUS_ISSUED,
            f"status {civil.PersonalIdStatus.Name(registration.personal_id_status)}, not ISSUED",
        )
        number = registration.personal_id
        expect(len(number) == 12 and number.isdigit(), "the number is not 12 digits")

        # The same request_id again: the same registration, the same number.
        again = register(civil, civil_stub, auth, request)
        expect(again.name == registration.name, "a retry created a second registration")
        expect(again.personal_id == number, "a retry answered another number")

        # A nameless child: INVALID_ARGUMENT naming the field.
        try:
            civil_stub.RegisterBirth(birth_request(civil, str(uuid.uuid4()), ""), metadata=auth, timeout=20)
            raise Broken("a child without a name was registered")
        except grpc.RpcError as error:
            expect(error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{error.code()}, not INVALID_ARGUMENT")
            invalid_fields = field_violations(error)
        expect("child.full_name" in invalid_fields, f"BadRequest names {invalid_fields}, not child.full_name")

        # The number, from the population registry's side.
        checked = population_stub.ValidatePersonalId(population.ValidatePersonalIdRequest(personal_id=number), timeout=20)
        expect(checked.valid, f"the number is not valid: {checked.invalid_reason}")
        expect(checked.decoded.birth_year == 2016, f"decoded birth year {checked.decoded.birth_year}")
        expect(checked.decoded.sex == population.SEX_MALE, "decoded sex is not male")
        expect(checked.state == population.PERSONAL_ID_STATE_ACTIVE, "the number is not active")
        citizen = population_stub.GetCitizen(population.GetCitizenRequest(personal_id=number), timeout=20).citizen
        expect(
            citizen.birth.full_name == unicodedata.normalize("NFC", CHILD_NAME),
            "the citizen record carries another name",
        )
        seen = {
            "registration": registration.name,
            "personal_id": number,
            "province_code": checked.decoded.province_code,
            "invalid_fields": sorted(set(invalid_fields)),
        }
        if args.minting_cert:
            minting_channel = channel(
                args.population,
                ca,
                args.server_name,
                pathlib.Path(args.minting_cert).read_bytes(),
                pathlib.Path(args.minting_key).read_bytes(),
            )
            seen.update(backfill(population, population_grpc.PopulationRegistryServiceStub(minting_channel)))
            minting_channel.close()
        civil_channel.close()
        population_channel.close()
    return seen


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--civil", required=True, help="civil registry host:port")
    parser.add_argument("--population", required=True, help="population registry host:port")
    parser.add_argument("--ca", required=True, help="CA certificate (PEM) that signed both servers")
    parser.add_argument("--cert", required=True, help="client certificate on the population read allow-list")
    parser.add_argument("--key", required=True, help="its private key")
    parser.add_argument("--minting-cert", help="client certificate on the minting allow-list: also backfill")
    parser.add_argument("--minting-key", help="its private key")
    parser.add_argument("--server-name", default="", help="name to check in the servers' certificates")
    parser.add_argument("--proto", default=str(REPO / "proto"), help="the contracts' directory")
    args = parser.parse_args()
    if bool(args.minting_cert) != bool(args.minting_key):
        parser.error("--minting-cert and --minting-key go together")
    try:
        print(json.dumps(run(args)))
    except (Broken, grpc.RpcError) as error:
        print(f"interop: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
