-- Operator controls: frozen rows, units on their way to a row, and the
-- adjustments and transfers themselves. Written by the journal writer from
-- the operator commands' entries, like every other row here.
ALTER TABLE inventory ADD COLUMN IF NOT EXISTS frozen boolean NOT NULL DEFAULT false;
ALTER TABLE inventory ADD COLUMN IF NOT EXISTS in_transit bigint NOT NULL DEFAULT 0;

-- Levels are written as [available, reserved, sold].
CREATE TABLE IF NOT EXISTS inventory_adjustment (
    adjustment_id   text        PRIMARY KEY,
    sku_id          text        NOT NULL,
    warehouse_id    text        NOT NULL,
    delta           bigint      NOT NULL,
    reason          text        NOT NULL,
    status          text        NOT NULL,
    proposed_by     text        NOT NULL,
    proposed_at     timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    proposed_levels bigint[]    NOT NULL,
    decided_by      text        NOT NULL DEFAULT '',
    decided_at      timestamptz,
    decision_reason text        NOT NULL DEFAULT '',
    before_levels   bigint[],
    after_levels    bigint[]
);
CREATE INDEX IF NOT EXISTS inventory_adjustment_status_idx ON inventory_adjustment (status, sku_id);

CREATE TABLE IF NOT EXISTS inventory_transfer (
    transfer_id       text        PRIMARY KEY,
    sku_id            text        NOT NULL,
    from_warehouse_id text        NOT NULL,
    to_warehouse_id   text        NOT NULL,
    qty               bigint      NOT NULL,
    reason            text        NOT NULL,
    status            text        NOT NULL,
    created_by        text        NOT NULL,
    created_at        timestamptz NOT NULL,
    expected_at       timestamptz,
    finished_by       text        NOT NULL DEFAULT '',
    finished_at       timestamptz,
    finish_reason     text        NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS inventory_transfer_status_idx ON inventory_transfer (status, sku_id);
