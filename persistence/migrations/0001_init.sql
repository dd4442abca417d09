-- The read model of the inventory service. Rows are written only by
-- the service's journal writer; everything here can be rebuilt from the
-- journal.

CREATE TABLE IF NOT EXISTS inventory (
    sku_id       text        NOT NULL,
    warehouse_id text        NOT NULL,
    available    bigint      NOT NULL,
    reserved     bigint      NOT NULL,
    sold         bigint      NOT NULL,
    version      bigint      NOT NULL,
    updated_at   timestamptz NOT NULL,
    CONSTRAINT inventory_sku_warehouse UNIQUE (sku_id, warehouse_id)
);

-- Partitioned by day of created_at; partitions are created by the writer on
-- demand and dropped after the retention window. PostgreSQL cannot enforce a
-- unique constraint across partitions without the partition key, so
-- (order_id, sku_id) is unique per day partition here; the service's core
-- enforces it globally (one hold per order line).
CREATE TABLE IF NOT EXISTS reservation (
    reservation_id text        NOT NULL,
    order_id       text        NOT NULL,
    sku_id         text        NOT NULL,
    warehouse_id   text        NOT NULL,
    qty            bigint      NOT NULL,
    status         text        NOT NULL,
    expire_at      timestamptz NOT NULL,
    idem_key       text        NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    payment_id     text,
    release_reason text
) PARTITION BY RANGE (created_at);
CREATE INDEX IF NOT EXISTS reservation_id_idx ON reservation (reservation_id);
CREATE INDEX IF NOT EXISTS reservation_status_expire_idx ON reservation (status, expire_at);

CREATE TABLE IF NOT EXISTS inventory_txn (
    txn_id           bigint      NOT NULL,
    sku_id           text        NOT NULL,
    warehouse_id     text        NOT NULL,
    type             text        NOT NULL,
    qty              bigint      NOT NULL,
    ref_id           text        NOT NULL,
    order_id         text        NOT NULL,
    detail           text        NOT NULL,
    before_qty       bigint      NOT NULL, -- available before
    after_qty        bigint      NOT NULL, -- available after
    before_reserved  bigint      NOT NULL,
    after_reserved   bigint      NOT NULL,
    before_sold      bigint      NOT NULL,
    after_sold       bigint      NOT NULL,
    version          bigint      NOT NULL, -- the row's version after the change
    shard            smallint    NOT NULL,
    seq              bigint      NOT NULL, -- journal entry
    trace_id         text        NOT NULL,
    operator         text        NOT NULL,
    created_at       timestamptz NOT NULL,
    PRIMARY KEY (txn_id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX IF NOT EXISTS inventory_txn_ref_type_idx ON inventory_txn (ref_id, type);
CREATE INDEX IF NOT EXISTS inventory_txn_sku_idx ON inventory_txn (sku_id, warehouse_id, version);

-- Events for downstream systems, written in the same transaction as
-- the rows they describe; event_id is unique so consumers can de-duplicate.
CREATE TABLE IF NOT EXISTS outbox (
    event_id     text        PRIMARY KEY,
    event_type   text        NOT NULL,
    aggregate_id text        NOT NULL,
    payload      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL,
    published_at timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unpublished_idx ON outbox (created_at) WHERE published_at IS NULL;

-- How far each shard's journal has been applied: advanced in the same
-- transaction as the rows, so every journal entry lands exactly once.
CREATE TABLE IF NOT EXISTS writer_checkpoint (
    shard      smallint    PRIMARY KEY,
    seq        bigint      NOT NULL,
    updated_at timestamptz NOT NULL
);

-- Every repair made by reconciliation.
CREATE TABLE IF NOT EXISTS reconcile_audit (
    id           bigserial   PRIMARY KEY,
    at           timestamptz NOT NULL,
    sku_id       text        NOT NULL,
    warehouse_id text        NOT NULL,
    side         text        NOT NULL,
    before       jsonb,
    after        jsonb       NOT NULL,
    reason       text        NOT NULL
);
