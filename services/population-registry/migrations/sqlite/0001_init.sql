-- Citizens: one row per number ever issued. Rows are never deleted, so the
-- primary key on the number is what guarantees a number is never issued twice,
-- even after cancellation. The 12-digit number is stored as an integer (the
-- rowid in SQLite), leading zeros restored on output.
CREATE TABLE citizens (
    personal_id           INTEGER PRIMARY KEY,
    request_id            TEXT    NOT NULL UNIQUE,
    content_hash          TEXT    NOT NULL,
    kind                  INTEGER NOT NULL,  -- 1 first issue, 2 re-issue
    status                INTEGER NOT NULL,  -- 1 active, 2 cancelled
    issue_time            INTEGER NOT NULL,  -- unix microseconds
    cancel_time           INTEGER,
    replaced_by           INTEGER,
    replaces              INTEGER,
    full_name             TEXT    NOT NULL,
    sex                   INTEGER NOT NULL,  -- 1 male, 2 female
    date_of_birth         TEXT    NOT NULL,  -- YYYY-MM-DD
    pob_description       TEXT    NOT NULL,
    pob_province          TEXT    NOT NULL,  -- '' when born abroad
    registration_province TEXT    NOT NULL,
    home_town             TEXT    NOT NULL,
    ethnicity             TEXT    NOT NULL,
    nationality           TEXT    NOT NULL,
    father                TEXT,              -- JSON, NULL when not recorded
    mother                TEXT,
    unit_code             TEXT    NOT NULL,
    registration_number   INTEGER NOT NULL,
    book_number           TEXT    NOT NULL,
    registration_date     TEXT    NOT NULL,  -- YYYY-MM-DD
    dup_key               INTEGER NOT NULL
);
CREATE INDEX citizens_registration ON citizens (unit_code, book_number, registration_number);
CREATE INDEX citizens_registration_date ON citizens (registration_date);
CREATE INDEX citizens_dup_key ON citizens (dup_key);

-- Numbers issued per six-digit prefix, updated in the issuing transaction.
CREATE TABLE buckets (
    prefix INTEGER PRIMARY KEY,
    issued INTEGER NOT NULL
);

-- Append-only, hash-chained audit log.
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY,
    at_micros   INTEGER NOT NULL,
    action      TEXT    NOT NULL,
    personal_id INTEGER NOT NULL,
    related_id  INTEGER,
    request_id  TEXT    NOT NULL,
    detail      TEXT    NOT NULL,
    prev_hash   TEXT    NOT NULL,
    hash        TEXT    NOT NULL
);

-- The chain's head: one row, updated (and on PostgreSQL locked) by every
-- writing transaction, which serialises appends across replicas.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT    NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
