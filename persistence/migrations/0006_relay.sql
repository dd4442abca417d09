-- Events reach the broker from the journal (the event relay), so the
-- outbox table is no longer written.
DROP TABLE IF EXISTS outbox;

-- The event relay's position per shard when the checkpoint last moved: after
-- the machine is lost, `restore` publishes again the events between it and
-- the checkpoint, from inventory_txn (NULL: no relay was running).
ALTER TABLE writer_checkpoint ADD COLUMN IF NOT EXISTS relay_seq bigint;
