-- Citizens in append order. In 0001 the number itself was the rowid, so every
-- insert landed on a random page of the table (a whole 4 KiB page written to
-- the WAL per ~600-byte row). Now rows are appended at the table's end and
-- the number's uniqueness, still the last guarantee against duplicates, is a
-- narrow UNIQUE index (integer keys, about 250 per page).
CREATE TABLE citizens_v2 (
    row_no                INTEGER PRIMARY KEY,
    personal_id           INTEGER NOT NULL UNIQUE,
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
INSERT INTO citizens_v2 (personal_id, request_id, content_hash, kind, status, issue_time,
    cancel_time, replaced_by, replaces, full_name, sex, date_of_birth, pob_description,
    pob_province, registration_province, home_town, ethnicity, nationality, father, mother,
    unit_code, registration_number, book_number, registration_date, dup_key)
SELECT personal_id, request_id, content_hash, kind, status, issue_time,
    cancel_time, replaced_by, replaces, full_name, sex, date_of_birth, pob_description,
    pob_province, registration_province, home_town, ethnicity, nationality, father, mother,
    unit_code, registration_number, book_number, registration_date, dup_key
FROM citizens ORDER BY issue_time, personal_id;
DROP TABLE citizens;
ALTER TABLE citizens_v2 RENAME TO citizens;
CREATE INDEX citizens_registration ON citizens (unit_code, book_number, registration_number);
CREATE INDEX citizens_registration_date ON citizens (registration_date);
CREATE INDEX citizens_dup_key ON citizens (dup_key);
