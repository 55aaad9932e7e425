-- The reason an official gives for a correction is free text about a person ("the
-- mother's name was misspelled as ..."). It was written into the audit log, whose details
-- hold only ids and codes so that the log can be handed to an auditor as is. It is kept
-- here, beside the correction, and the audit entry carries its SHA-256, so the chain still
-- vouches for it. Corrections made before this migration have it only in their audit entry.
ALTER TABLE corrections ADD COLUMN reason TEXT;
