-- 0003 (contract): the end of the message -> body change started by 0002.
-- Runs after the release that uses `body` is deployed everywhere. Releases older than 0002 read
-- `message` and cannot run after this: the delivery tool refuses to roll back to them.
DROP TRIGGER IF EXISTS greetings_sync_body ON greetings;
DROP FUNCTION IF EXISTS greetings_sync_body();
UPDATE greetings SET body = message WHERE body IS NULL;
ALTER TABLE greetings ALTER COLUMN body SET NOT NULL;
ALTER TABLE greetings DROP COLUMN IF EXISTS message;
