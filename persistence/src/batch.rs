//! Turning journal entries into the rows of one PostgreSQL transaction.
//! Rows touched more than once in a batch are collapsed to their final
//! state, so each statement touches each row at most once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use inventory_core::{Command, Entry, Levels, TxnKind, REASON_TIMEOUT};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::Transaction;

use crate::schema::{day_of, to_system_time};
use crate::PersistenceError;

#[derive(Default)]
pub(crate) struct Batch {
    /// Final state per `(sku, warehouse)`: levels, version, time.
    inventory: BTreeMap<(String, String), (Levels, u64, u64)>,
    new_holds: Vec<NewHold>,
    new_index: BTreeMap<String, usize>,
    /// Holds created in earlier batches: final status per reservation id.
    hold_updates: BTreeMap<String, HoldUpdate>,
    txns: Txns,
    /// Operator state of rows: a freeze's final value and the net change
    /// of units in transit, per `(sku, warehouse)`.
    row_ops: BTreeMap<(String, String), (Option<bool>, i64)>,
    /// Adjustments and transfers created or finished, in journal order.
    operator_writes: Vec<OperatorWrite>,
    pub(crate) days: BTreeSet<i64>,
    /// Highest reservation and txn sequences in the batch, and its last time.
    pub(crate) max_hold_seq: u64,
    pub(crate) max_txn_seq: u64,
    pub(crate) last_at: u64,
}

struct NewHold {
    id: String,
    order_id: String,
    sku_id: String,
    warehouse_id: String,
    qty: i64,
    expire_at: u64,
    idem_key: String,
    created_at: u64,
    update: HoldUpdate,
}

#[derive(Clone)]
struct HoldUpdate {
    status: &'static str,
    updated_at: u64,
    payment_id: Option<String>,
    release_reason: Option<String>,
}

/// One write to `inventory_adjustment` or `inventory_transfer`.
enum OperatorWrite {
    AdjustmentProposed {
        id: String,
        sku_id: String,
        warehouse_id: String,
        delta: i64,
        reason: String,
        proposed_by: String,
        proposed_at: u64,
        expires_at: u64,
        levels: Levels,
    },
    /// Approved, rejected or expired. `levels`: before and after an
    /// approval.
    AdjustmentDecided {
        id: String,
        status: &'static str,
        decided_by: String,
        decided_at: u64,
        reason: String,
        levels: Option<(Levels, Levels)>,
    },
    TransferDispatched {
        id: String,
        sku_id: String,
        from: String,
        to: String,
        qty: i64,
        reason: String,
        created_by: String,
        created_at: u64,
        expected_at: Option<u64>,
    },
    TransferFinished {
        id: String,
        status: &'static str,
        finished_by: String,
        finished_at: u64,
        reason: String,
    },
}

fn levels_array(l: Levels) -> Vec<i64> {
    vec![l.available as i64, l.reserved as i64, l.sold as i64]
}

#[derive(Default)]
struct Txns {
    txn_id: Vec<i64>,
    sku: Vec<String>,
    warehouse: Vec<String>,
    kind: Vec<String>,
    qty: Vec<i64>,
    ref_id: Vec<String>,
    order_id: Vec<String>,
    detail: Vec<String>,
    before: [Vec<i64>; 3],
    after: [Vec<i64>; 3],
    version: Vec<i64>,
    shard: Vec<i16>,
    seq: Vec<i64>,
    trace: Vec<String>,
    operator: Vec<String>,
    at: Vec<SystemTime>,
}

impl Batch {
    pub(crate) fn build(shard: u16, entries: &[Entry]) -> Batch {
        let mut b = Batch::default();
        for entry in entries {
            b.last_at = b.last_at.max(entry.at);
            let trace = format!("{:032x}", entry.trace_id);
            for t in &entry.txns {
                b.days.insert(day_of(t.at));
                b.max_txn_seq = b.max_txn_seq.max(t.txn_id & inventory_core::ReservationId::SEQ_MAX);
                if t.kind == TxnKind::Reserve {
                    if let Ok(id) = t.ref_id.parse::<inventory_core::ReservationId>() {
                        b.max_hold_seq = b.max_hold_seq.max(id.seq());
                    }
                }
                b.inventory.insert((t.sku_id.clone(), t.warehouse_id.clone()), (t.after, t.version, t.at));
                let x = &mut b.txns;
                x.txn_id.push(t.txn_id as i64);
                x.sku.push(t.sku_id.clone());
                x.warehouse.push(t.warehouse_id.clone());
                x.kind.push(t.kind.as_str().to_string());
                x.qty.push(t.qty as i64);
                x.ref_id.push(t.ref_id.clone());
                x.order_id.push(t.order_id.clone());
                x.detail.push(t.detail.clone());
                for (i, (before, after)) in [
                    (t.before.available, t.after.available),
                    (t.before.reserved, t.after.reserved),
                    (t.before.sold, t.after.sold),
                ]
                .into_iter()
                .enumerate()
                {
                    x.before[i].push(before as i64);
                    x.after[i].push(after as i64);
                }
                x.version.push(t.version as i64);
                x.shard.push(shard as i16);
                x.seq.push(entry.seq as i64);
                x.trace.push(trace.clone());
                x.operator.push(entry.operator.clone());
                x.at.push(to_system_time(t.at));

                if t.kind.is_operator() {
                    b.operator_txn(entry, t);
                    continue;
                }
                let update = match t.kind {
                    TxnKind::Receive => continue,
                    TxnKind::Reserve => {
                        let (expire_at, idem_key) = match &entry.command {
                            Command::PrepareOrder(c) => (c.expire_at, c.idem_key.clone()),
                            command => {
                                let r = command.as_reserve().expect("only a reserve or an order makes a hold");
                                (entry.at.saturating_add(r.ttl_ms), r.idem_key.clone())
                            }
                        };
                        b.new_index.insert(t.ref_id.clone(), b.new_holds.len());
                        b.new_holds.push(NewHold {
                            id: t.ref_id.clone(),
                            order_id: t.order_id.clone(),
                            sku_id: t.sku_id.clone(),
                            warehouse_id: t.warehouse_id.clone(),
                            qty: t.qty as i64,
                            expire_at,
                            idem_key,
                            created_at: t.at,
                            update: HoldUpdate {
                                status: "RESERVED",
                                updated_at: t.at,
                                payment_id: None,
                                release_reason: None,
                            },
                        });
                        continue;
                    }
                    TxnKind::Confirm => HoldUpdate {
                        status: "CONFIRMED",
                        updated_at: t.at,
                        payment_id: Some(t.detail.clone()),
                        release_reason: None,
                    },
                    TxnKind::Release => HoldUpdate {
                        status: if t.detail == REASON_TIMEOUT { "EXPIRED" } else { "RELEASED" },
                        updated_at: t.at,
                        payment_id: None,
                        release_reason: Some(t.detail.clone()),
                    },
                    _ => unreachable!("operator txns are written above"),
                };
                match b.new_index.get(&t.ref_id) {
                    Some(&i) => b.new_holds[i].update = update,
                    None => {
                        b.hold_updates.insert(t.ref_id.clone(), update);
                    }
                }
            }
        }
        b
    }

    /// What an operator's txn writes beside `inventory_txn` and the outbox.
    fn operator_txn(&mut self, entry: &Entry, t: &inventory_core::Txn) {
        let row = (t.sku_id.clone(), t.warehouse_id.clone());
        match t.kind {
            TxnKind::Freeze | TxnKind::Unfreeze => {
                self.row_ops.entry(row).or_default().0 = Some(t.kind == TxnKind::Freeze);
            }
            TxnKind::TransferIncoming => self.row_ops.entry(row).or_default().1 += t.qty as i64,
            TxnKind::TransferCancelled => self.row_ops.entry(row).or_default().1 -= t.qty as i64,
            TxnKind::TransferIn => {
                self.row_ops.entry(row).or_default().1 -= t.qty as i64;
                self.finish_transfer(entry, t, "ARRIVED");
            }
            TxnKind::TransferReturned => self.finish_transfer(entry, t, "CANCELLED"),
            // The row itself is all a repair writes; a policy is kept in
            // the txn's detail.
            TxnKind::Repair | TxnKind::PolicySet | TxnKind::PolicyRemoved => {}
            TxnKind::TransferOut => {
                let (created_by, expected_at) = match &entry.command {
                    Command::DispatchTransfer(c) => (c.operator.clone(), c.expected_in_ms.map(|ms| entry.at + ms)),
                    _ => (entry.operator.clone(), None),
                };
                self.operator_writes.push(OperatorWrite::TransferDispatched {
                    id: t.ref_id.clone(),
                    sku_id: t.sku_id.clone(),
                    from: t.warehouse_id.clone(),
                    to: t.order_id.clone(),
                    qty: t.qty as i64,
                    reason: t.detail.clone(),
                    created_by,
                    created_at: t.at,
                    expected_at,
                });
            }
            TxnKind::AdjustProposed => {
                let expires_at = match &entry.command {
                    Command::ProposeAdjustment(c) => entry.at.saturating_add(c.ttl_ms),
                    _ => entry.at,
                };
                self.operator_writes.push(OperatorWrite::AdjustmentProposed {
                    id: t.ref_id.clone(),
                    sku_id: t.sku_id.clone(),
                    warehouse_id: t.warehouse_id.clone(),
                    delta: t.delta(),
                    reason: t.detail.clone(),
                    proposed_by: t.order_id.clone(),
                    proposed_at: t.at,
                    expires_at,
                    levels: t.before,
                });
            }
            TxnKind::AdjustApplied | TxnKind::AdjustRejected | TxnKind::AdjustExpired => {
                let (decided_by, reason) = match &entry.command {
                    Command::DecideAdjustment(c) if t.kind != TxnKind::AdjustExpired => {
                        (c.operator.clone(), c.reason.clone())
                    }
                    _ => (String::new(), String::new()),
                };
                let (status, levels) = match t.kind {
                    TxnKind::AdjustApplied => ("APPLIED", Some((t.before, t.after))),
                    TxnKind::AdjustRejected => ("REJECTED", None),
                    _ => ("EXPIRED", None),
                };
                self.operator_writes.push(OperatorWrite::AdjustmentDecided {
                    id: t.ref_id.clone(),
                    status,
                    decided_by,
                    decided_at: t.at,
                    reason,
                    levels,
                });
            }
            TxnKind::Receive | TxnKind::Reserve | TxnKind::Confirm | TxnKind::Release => {
                unreachable!("not an operator's txn")
            }
        }
    }

    fn finish_transfer(&mut self, entry: &Entry, t: &inventory_core::Txn, status: &'static str) {
        let finished_by = match &entry.command {
            Command::FinishTransfer(c) => c.operator.clone(),
            _ => entry.operator.clone(),
        };
        self.operator_writes.push(OperatorWrite::TransferFinished {
            id: t.ref_id.clone(),
            status,
            finished_by,
            finished_at: t.at,
            reason: t.detail.clone(),
        });
    }

    /// Writes the operator state of rows, adjustments and transfers: a few
    /// statements each, as operators act rarely.
    async fn write_operator(&self, tx: &Transaction<'_>) -> Result<(), PersistenceError> {
        for ((sku, warehouse), (frozen, in_transit)) in &self.row_ops {
            tx.execute(
                "UPDATE inventory SET frozen = COALESCE($3, frozen), in_transit = in_transit + $4
                  WHERE sku_id = $1 AND warehouse_id = $2",
                &[sku, warehouse, frozen, in_transit],
            )
            .await?;
        }
        let time = |ms: u64| to_system_time(ms);
        for write in &self.operator_writes {
            match write {
                OperatorWrite::AdjustmentProposed {
                    id,
                    sku_id,
                    warehouse_id,
                    delta,
                    reason,
                    proposed_by,
                    proposed_at,
                    expires_at,
                    levels,
                } => {
                    tx.execute(
                        "INSERT INTO inventory_adjustment (adjustment_id, sku_id, warehouse_id, delta, reason, status,
                                                           proposed_by, proposed_at, expires_at, proposed_levels)
                         VALUES ($1, $2, $3, $4, $5, 'PENDING', $6, $7, $8, $9)",
                        &[
                            id,
                            sku_id,
                            warehouse_id,
                            delta,
                            reason,
                            proposed_by,
                            &time(*proposed_at),
                            &time(*expires_at),
                            &levels_array(*levels),
                        ],
                    )
                    .await?;
                }
                OperatorWrite::AdjustmentDecided { id, status, decided_by, decided_at, reason, levels } => {
                    let before = levels.map(|(b, _)| levels_array(b));
                    let after = levels.map(|(_, a)| levels_array(a));
                    tx.execute(
                        "UPDATE inventory_adjustment SET status = $2, decided_by = $3, decided_at = $4,
                                decision_reason = $5, before_levels = $6, after_levels = $7
                          WHERE adjustment_id = $1",
                        &[id, status, decided_by, &time(*decided_at), reason, &before, &after],
                    )
                    .await?;
                }
                OperatorWrite::TransferDispatched {
                    id,
                    sku_id,
                    from,
                    to,
                    qty,
                    reason,
                    created_by,
                    created_at,
                    expected_at,
                } => {
                    tx.execute(
                        "INSERT INTO inventory_transfer (transfer_id, sku_id, from_warehouse_id, to_warehouse_id, qty,
                                                         reason, status, created_by, created_at, expected_at)
                         VALUES ($1, $2, $3, $4, $5, $6, 'IN_TRANSIT', $7, $8, $9)",
                        &[id, sku_id, from, to, qty, reason, created_by, &time(*created_at), &expected_at.map(time)],
                    )
                    .await?;
                }
                OperatorWrite::TransferFinished { id, status, finished_by, finished_at, reason } => {
                    tx.execute(
                        "UPDATE inventory_transfer SET status = $2, finished_by = $3, finished_at = $4,
                                finish_reason = $5
                          WHERE transfer_id = $1",
                        &[id, status, finished_by, &time(*finished_at), reason],
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.txns.txn_id.is_empty()
    }

    /// Writes the inventory rows only (also used to inject a stale re-apply).
    pub(crate) async fn write_inventory(&self, tx: &Transaction<'_>) -> Result<(), PersistenceError> {
        if self.inventory.is_empty() {
            return Ok(());
        }
        let rows = &self.inventory;
        let sku: Vec<&str> = rows.keys().map(|(s, _)| s.as_str()).collect();
        let warehouse: Vec<&str> = rows.keys().map(|(_, w)| w.as_str()).collect();
        let level = |f: fn(&Levels) -> u64| rows.values().map(|(l, _, _)| f(l) as i64).collect::<Vec<i64>>();
        let version: Vec<i64> = rows.values().map(|(_, v, _)| *v as i64).collect();
        let at: Vec<SystemTime> = rows.values().map(|(_, _, at)| to_system_time(*at)).collect();
        tx.execute(
            "INSERT INTO inventory (sku_id, warehouse_id, available, reserved, sold, version, updated_at)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::timestamptz[])
             ON CONFLICT (sku_id, warehouse_id) DO UPDATE SET available = EXCLUDED.available, reserved = EXCLUDED.reserved,
                 sold = EXCLUDED.sold, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at",
            &[&sku, &warehouse, &level(|l| l.available), &level(|l| l.reserved), &level(|l| l.sold), &version, &at],
        )
        .await?;
        Ok(())
    }

    /// Writes everything (inside the caller's transaction).
    pub(crate) async fn write(&self, tx: &Transaction<'_>) -> Result<(), PersistenceError> {
        self.write_inventory(tx).await?;
        self.write_operator(tx).await?;
        if !self.new_holds.is_empty() {
            let h = &self.new_holds;
            let text = |f: fn(&NewHold) -> &str| h.iter().map(f).collect::<Vec<&str>>();
            let time = |f: fn(&NewHold) -> u64| h.iter().map(|x| to_system_time(f(x))).collect::<Vec<SystemTime>>();
            let qty: Vec<i64> = h.iter().map(|x| x.qty).collect();
            let status: Vec<&str> = h.iter().map(|x| x.update.status).collect();
            let payment: Vec<Option<&str>> = h.iter().map(|x| x.update.payment_id.as_deref()).collect();
            let reason: Vec<Option<&str>> = h.iter().map(|x| x.update.release_reason.as_deref()).collect();
            tx.execute(
                "INSERT INTO reservation (reservation_id, order_id, sku_id, warehouse_id, qty, status, expire_at, idem_key,
                                          created_at, updated_at, payment_id, release_reason)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[],
                                      $7::timestamptz[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::text[], $12::text[])",
                &[
                    &text(|x| &x.id),
                    &text(|x| &x.order_id),
                    &text(|x| &x.sku_id),
                    &text(|x| &x.warehouse_id),
                    &qty,
                    &status,
                    &time(|x| x.expire_at),
                    &text(|x| &x.idem_key),
                    &time(|x| x.created_at),
                    &time(|x| x.update.updated_at),
                    &payment,
                    &reason,
                ],
            )
            .await?;
        }
        if !self.hold_updates.is_empty() {
            let ids: Vec<&str> = self.hold_updates.keys().map(String::as_str).collect();
            let u: Vec<&HoldUpdate> = self.hold_updates.values().collect();
            let status: Vec<&str> = u.iter().map(|x| x.status).collect();
            let at: Vec<SystemTime> = u.iter().map(|x| to_system_time(x.updated_at)).collect();
            let payment: Vec<Option<&str>> = u.iter().map(|x| x.payment_id.as_deref()).collect();
            let reason: Vec<Option<&str>> = u.iter().map(|x| x.release_reason.as_deref()).collect();
            // The `= ANY` condition lets every day partition find its rows
            // through its reservation_id index. With the join condition
            // alone, and no statistics on the partitioned parent (autovacuum
            // never analyses one), the planner merges the whole index; and
            // on a day partition not yet analysed it guesses that a long
            // `ANY` list matches most rows and scans them all. Both cost a
            // full pass over the day's holds per batch, so scans are ruled
            // out for this statement.
            tx.batch_execute("SET LOCAL enable_seqscan = off").await?;
            tx.execute(
                "UPDATE reservation r SET status = u.status, updated_at = u.updated_at,
                        payment_id = COALESCE(u.payment_id, r.payment_id), release_reason = COALESCE(u.reason, r.release_reason)
                   FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[]) AS u(id, status, updated_at, payment_id, reason)
                  WHERE r.reservation_id = u.id AND r.reservation_id = ANY($1::text[])",
                &[&ids, &status, &at, &payment, &reason],
            )
            .await?;
            tx.batch_execute("SET LOCAL enable_seqscan = on").await?;
        }
        // The two largest tables go in with binary COPY (routed into the
        // day partitions by PostgreSQL).
        let x = &self.txns;
        let sink = tx
            .copy_in(
                "COPY inventory_txn (txn_id, sku_id, warehouse_id, type, qty, ref_id, order_id, detail, before_qty, after_qty,
                                     before_reserved, after_reserved, before_sold, after_sold, version, shard, seq, trace_id,
                                     operator, created_at) FROM STDIN BINARY",
            )
            .await?;
        let types = [
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT2,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TIMESTAMPTZ,
        ];
        let writer = BinaryCopyInWriter::new(sink, &types);
        let mut writer = std::pin::pin!(writer);
        for i in 0..x.txn_id.len() {
            writer
                .as_mut()
                .write(&[
                    &x.txn_id[i],
                    &x.sku[i],
                    &x.warehouse[i],
                    &x.kind[i],
                    &x.qty[i],
                    &x.ref_id[i],
                    &x.order_id[i],
                    &x.detail[i],
                    &x.before[0][i],
                    &x.after[0][i],
                    &x.before[1][i],
                    &x.after[1][i],
                    &x.before[2][i],
                    &x.after[2][i],
                    &x.version[i],
                    &x.shard[i],
                    &x.seq[i],
                    &x.trace[i],
                    &x.operator[i],
                    &x.at[i],
                ])
                .await?;
        }
        writer.finish().await?;
        Ok(())
    }
}
