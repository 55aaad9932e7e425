-- A registration entered the personal-id index without a number and left it when its
-- number arrived, so its commit and its write-back both touched the index. Only numbers
-- need the uniqueness check: the partial index holds just those. (SQLite's migration also
-- makes the audit sequence the table's own key. PostgreSQL's primary key already is a
-- single index.)
DROP INDEX registrations_personal_id;
CREATE UNIQUE INDEX registrations_personal_id ON registrations (personal_id)
    WHERE personal_id IS NOT NULL;
