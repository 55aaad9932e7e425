-- Listing by unit reads the register-number key, which leads with the unit that
-- registered, plus this partial index of the registrations a correction moved to another
-- unit (no insert touches it). It replaces registrations_unit_date, whose unit-led key put
-- a random leaf page into every registration's commit (about a sixth of the WAL pages the
-- registry wrote, in the pilot and at national scale alike).
DROP INDEX registrations_unit_date;
CREATE INDEX registrations_moved ON registrations (unit_code) WHERE unit_code <> origin_unit_code;
