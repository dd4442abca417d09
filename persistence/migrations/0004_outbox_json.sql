-- Outbox payloads are written once and read whole by the publisher, so they
-- are stored as the JSON text the writer produced: no conversion to jsonb on
-- every insert, and smaller rows. Query them with `payload::jsonb` if needed.
ALTER TABLE outbox ALTER COLUMN payload TYPE json USING payload::json;
