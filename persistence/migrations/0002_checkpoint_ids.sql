-- What a restore needs to continue id sequences even after retention has
-- dropped the rows that carried them.
ALTER TABLE writer_checkpoint ADD COLUMN IF NOT EXISTS max_hold_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE writer_checkpoint ADD COLUMN IF NOT EXISTS max_txn_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE writer_checkpoint ADD COLUMN IF NOT EXISTS last_at_ms bigint NOT NULL DEFAULT 0;
