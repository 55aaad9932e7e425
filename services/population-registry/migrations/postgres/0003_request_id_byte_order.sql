-- FindCitizenByRegistration finds the issues made after a correction, whose keys are the
-- registration id, a colon and a suffix, as one range of the request_id index: from
-- '{id}:' up to '{id};'. Those keys make up that range only in byte order, which a
-- database created with a linguistic collation (en_US.UTF-8, say) does not use for the
-- column. Equality, and so the idempotency key's uniqueness, is the same in both orders.
ALTER TABLE citizens ALTER COLUMN request_id TYPE TEXT COLLATE "C";
