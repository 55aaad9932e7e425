CREATE TABLE units (
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    level TEXT NOT NULL,
    province_code TEXT NOT NULL,
    parent_code TEXT,
    active BIGINT NOT NULL,
    path TEXT COLLATE "C" NOT NULL,
    district_code TEXT NOT NULL
);
CREATE TABLE officials (
    id TEXT COLLATE "C" PRIMARY KEY,
    unit_code TEXT NOT NULL REFERENCES units(code),
    role TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    active BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);
CREATE TABLE register_counters (
    unit_code TEXT NOT NULL,
    reg_year BIGINT NOT NULL,
    last_number BIGINT NOT NULL,
    PRIMARY KEY (unit_code, reg_year)
);
CREATE TABLE registrations (
    id TEXT COLLATE "C" PRIMARY KEY,
    origin_unit_code TEXT NOT NULL,
    request_id TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    unit_code TEXT NOT NULL REFERENCES units(code),
    official_id TEXT NOT NULL,
    reg_year BIGINT NOT NULL,
    registration_number BIGINT NOT NULL,
    book_number TEXT NOT NULL,
    registered_on TEXT COLLATE "C" NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    reasons BIGINT NOT NULL,
    rule_version TEXT NOT NULL,
    rejection_reason TEXT,
    personal_id TEXT,
    issue_time_ms BIGINT,
    issue_key TEXT,
    issue_generation BIGINT NOT NULL,
    record TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    UNIQUE (origin_unit_code, request_id),
    UNIQUE (origin_unit_code, reg_year, registration_number)
);
CREATE UNIQUE INDEX registrations_personal_id ON registrations (personal_id);
CREATE INDEX registrations_unit_date ON registrations (unit_code, registered_on);
CREATE INDEX registrations_date ON registrations (registered_on);
CREATE INDEX registrations_created ON registrations (created_at_ms, id);
CREATE TABLE cancelled_personal_ids (
    personal_id TEXT PRIMARY KEY,
    registration_id TEXT NOT NULL,
    cancelled_at_ms BIGINT NOT NULL
);
CREATE INDEX cancelled_personal_ids_registration ON cancelled_personal_ids (registration_id);
CREATE TABLE corrections (
    registration_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    reissued BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (registration_id, request_id)
);
CREATE TABLE outbox (
    issue_key TEXT PRIMARY KEY,
    registration_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload BYTEA NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_ms BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until_ms BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    last_error TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_ms);
CREATE INDEX outbox_registration ON outbox (registration_id);
CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    entity TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
