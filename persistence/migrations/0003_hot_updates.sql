-- Leave a quarter of every inventory page free, so the writer's updates of
-- the counters (none of which is indexed) stay on their page as HOT updates
-- and do not add an entry to the (sku_id, warehouse_id) index each time.
ALTER TABLE inventory SET (fillfactor = 75);
