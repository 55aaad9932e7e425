-- FindCitizenByRegistration looks citizens up by one integer (register_entry_key in
-- src/domain/birth.rs) instead of three columns: the unit and book digest, then the entry
-- number. Rows stored before this migration get their key from `store::migrate`, in
-- Rust, before the service serves.
ALTER TABLE citizens ADD COLUMN register_key BIGINT;
DROP INDEX citizens_registration;
CREATE INDEX citizens_register_key ON citizens (register_key);
