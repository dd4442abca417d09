-- The read model answers "the holds of an order" (the gateway's
-- /api/read-model/orders/{orderId}/inventory-status): one index entry per
-- hold, in each day partition.
CREATE INDEX IF NOT EXISTS reservation_order_idx ON reservation (order_id);
