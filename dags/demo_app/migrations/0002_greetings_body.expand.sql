-- 0002 (expand): greetings.message becomes greetings.body, in two steps.
-- This step only adds: the new column, filled from the old one, and a trigger that keeps the two
-- in step while releases that write `message` and releases that write `body` run side by side.
-- The release that reads and writes `body` deploys after it; 0003 (contract) removes `message`.
ALTER TABLE greetings ADD COLUMN IF NOT EXISTS body text;
ALTER TABLE greetings ALTER COLUMN message DROP NOT NULL;
UPDATE greetings SET body = message WHERE body IS NULL;

CREATE OR REPLACE FUNCTION greetings_sync_body() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.body IS NULL THEN
        NEW.body := NEW.message;
    END IF;
    IF NEW.message IS NULL THEN
        NEW.message := NEW.body;
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS greetings_sync_body ON greetings;
CREATE TRIGGER greetings_sync_body BEFORE INSERT OR UPDATE ON greetings
    FOR EACH ROW EXECUTE FUNCTION greetings_sync_body();

CREATE INDEX IF NOT EXISTS greetings_created_at ON greetings (created_at DESC);
