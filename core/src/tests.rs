//! Unit tests of every transition and rejection of [`Shard`].

use crate::*;

const T0: Millis = 1_700_000_000_000;
const TTL: Millis = 15 * 60 * SECOND_MS;

fn shard() -> Shard {
    Shard::new(ShardConfig::new(3))
}

fn receive(sku: &str, wh: &str, qty: u64, key: &str) -> Command {
    Command::Receive(Receive {
        sku_id: sku.into(),
        warehouse_id: wh.into(),
        qty,
        idem_key: key.into(),
        reference: String::new(),
    })
}

fn reserve(order: &str, sku: &str, qty: u64, key: &str) -> Command {
    Command::Reserve(Reserve {
        order_id: order.into(),
        sku_id: sku.into(),
        warehouse_id: DEFAULT_WAREHOUSE.into(),
        qty,
        idem_key: key.into(),
        ttl_ms: TTL,
        ttl_explicit: false,
    })
}

fn confirm(id: ReservationId, payment: &str, key: &str) -> Command {
    Command::Confirm(Confirm { reservation_id: id, payment_id: payment.into(), idem_key: key.into() })
}

fn release(id: ReservationId, key: &str) -> Command {
    Command::Release(Release { reservation_id: id, reason: "CANCELLED".into(), idem_key: key.into() })
}

/// Applies and checks every invariant afterwards.
fn apply(s: &mut Shard, at: Millis, c: &Command) -> (Applied, Vec<Txn>) {
    let mut txns = Vec::new();
    let applied = s.apply(at, c, &mut txns);
    s.check_invariants().unwrap();
    assert_eq!(applied.changed, !txns.is_empty(), "a change is exactly a command that produced txns");
    (applied, txns)
}

fn levels(s: &Shard, sku: &str) -> Levels {
    s.stock(sku).unwrap().total()
}

fn lv(available: u64, reserved: u64, sold: u64) -> Levels {
    Levels { available, reserved, sold }
}

fn reserved_id(a: &Applied) -> ReservationId {
    match a.outcome {
        Outcome::Reserved { reservation_id, .. } => reservation_id,
        other => panic!("expected Reserved, got {other:?}"),
    }
}

fn stocked(qty: u64) -> Shard {
    let mut s = shard();
    apply(&mut s, T0, &receive("sku-1", DEFAULT_WAREHOUSE, qty, "rcv-1"));
    s
}

#[test]
fn receive_creates_row_and_adds_to_it() {
    let mut s = shard();
    let (a, txns) = apply(&mut s, T0, &receive("sku-1", "w1", 10, "k1"));
    assert!(a.changed);
    assert_eq!(a.outcome, Outcome::Received { levels: lv(10, 0, 0), version: 1, updated_at: T0 });
    assert_eq!(txns.len(), 1);
    assert_eq!(
        (txns[0].kind, txns[0].qty, txns[0].before, txns[0].after),
        (TxnKind::Receive, 10, lv(0, 0, 0), lv(10, 0, 0))
    );
    apply(&mut s, T0 + 1, &receive("sku-1", "w1", 5, "k2"));
    apply(&mut s, T0 + 2, &receive("sku-1", "w2", 7, "k3"));
    let stock = s.stock("sku-1").unwrap();
    assert_eq!(stock.total(), lv(22, 0, 0));
    assert_eq!(stock.warehouses.len(), 2);
    assert_eq!(stock.warehouses[0].row.version, 2);
    assert_eq!(stock.updated_at(), T0 + 2);
    assert!(s.stock("sku-2").is_none());
}

#[test]
fn receive_rejects_zero_and_overflow() {
    let mut s = stocked(10);
    let before = s.dump();
    assert_eq!(
        apply(&mut s, T0, &receive("sku-1", DEFAULT_WAREHOUSE, 0, "k0")).0.outcome,
        Outcome::Rejected(Rejection::InvalidQuantity)
    );
    let (a, _) = apply(&mut s, T0, &receive("sku-1", DEFAULT_WAREHOUSE, u64::MAX, "k9"));
    assert_eq!(a.outcome, Outcome::Rejected(Rejection::QuantityOverflow));
    assert_eq!(s.dump(), before);
}

#[test]
fn reserve_moves_available_to_reserved() {
    let mut s = stocked(10);
    let (a, txns) = apply(&mut s, T0 + 5, &reserve("o1", "sku-1", 3, "t:o1:reserve"));
    let id = reserved_id(&a);
    assert_eq!(id.shard(), 3);
    assert_eq!(a.outcome, Outcome::Reserved { reservation_id: id, expire_at: T0 + 5 + TTL });
    assert_eq!(levels(&s, "sku-1"), lv(7, 3, 0));
    assert_eq!(txns[0].kind, TxnKind::Reserve);
    assert_eq!((txns[0].before, txns[0].after), (lv(10, 0, 0), lv(7, 3, 0)));
    assert_eq!(txns[0].ref_id, id.to_string());
    assert_eq!(txns[0].order_id, "o1");
    let view = s.reservation(id).unwrap();
    assert_eq!((view.status, view.qty, view.order_id.as_str()), (ReservationStatus::Reserved, 3, "o1"));
}

#[test]
fn reserve_with_short_stock_changes_nothing() {
    let mut s = stocked(2);
    let before = s.dump();
    let (a, txns) = apply(&mut s, T0, &reserve("o1", "sku-1", 3, "k"));
    assert_eq!(a.outcome, Outcome::Rejected(Rejection::InsufficientStock { available: 2 }));
    assert!(!a.changed && txns.is_empty());
    assert_eq!(s.dump(), before);
    // Not remembered: the retry is evaluated again and succeeds once stock arrives.
    apply(&mut s, T0 + 1, &receive("sku-1", DEFAULT_WAREHOUSE, 1, "rcv-2"));
    assert!(matches!(apply(&mut s, T0 + 2, &reserve("o1", "sku-1", 3, "k")).0.outcome, Outcome::Reserved { .. }));
}

#[test]
fn reserve_of_unknown_sku_or_warehouse_is_not_found() {
    let mut s = stocked(2);
    assert_eq!(apply(&mut s, T0, &reserve("o1", "nope", 1, "k")).0.outcome, Outcome::Rejected(Rejection::SkuNotFound));
    let mut c = reserve("o1", "sku-1", 1, "k2");
    if let Command::Reserve(r) = &mut c {
        r.warehouse_id = "elsewhere".into();
    }
    assert_eq!(apply(&mut s, T0, &c).0.outcome, Outcome::Rejected(Rejection::SkuNotFound));
}

#[test]
fn one_hold_per_order_line() {
    let mut s = stocked(10);
    let first = reserved_id(&apply(&mut s, T0, &reserve("o1", "sku-1", 2, "k1")).0);
    // Same line, same request, new key: the existing hold, no second one.
    let (a, txns) = apply(&mut s, T0 + 1, &reserve("o1", "sku-1", 2, "k2"));
    assert_eq!(reserved_id(&a), first);
    assert!(!a.changed && txns.is_empty());
    // Same line, different quantity: a conflict.
    let (a, _) = apply(&mut s, T0 + 1, &reserve("o1", "sku-1", 3, "k3"));
    assert_eq!(
        a.outcome,
        Outcome::Rejected(Rejection::DuplicateOrderLine { existing: first, status: ReservationStatus::Reserved })
    );
    // Once the hold is finished, the line stays taken.
    apply(&mut s, T0 + 2, &release(first, "rel"));
    let (a, _) = apply(&mut s, T0 + 3, &reserve("o1", "sku-1", 2, "k4"));
    assert_eq!(
        a.outcome,
        Outcome::Rejected(Rejection::DuplicateOrderLine { existing: first, status: ReservationStatus::Released })
    );
    assert_eq!(levels(&s, "sku-1"), lv(10, 0, 0));
    assert_eq!(s.order("o1").len(), 1);
}

#[test]
fn idempotent_repeat_replays_the_stored_outcome() {
    let mut s = stocked(10);
    let (first, _) = apply(&mut s, T0, &reserve("o1", "sku-1", 2, "k1"));
    let id = reserved_id(&first);
    apply(&mut s, T0 + 1, &confirm(id, "pay-1", "k-confirm"));
    // The hold is confirmed now, yet the reserve's key still answers what it answered.
    let (again, txns) = apply(&mut s, T0 + 2, &reserve("o1", "sku-1", 2, "k1"));
    assert_eq!(again.outcome, first.outcome);
    assert!(again.replayed && !again.changed && txns.is_empty());
    assert_eq!(levels(&s, "sku-1"), lv(8, 0, 2));
}

#[test]
fn reused_key_with_different_request_is_a_conflict() {
    let mut s = stocked(10);
    apply(&mut s, T0, &reserve("o1", "sku-1", 2, "k1"));
    let before = s.dump();
    for c in
        [reserve("o1", "sku-1", 3, "k1"), reserve("o2", "sku-1", 2, "k1"), receive("sku-1", DEFAULT_WAREHOUSE, 2, "k1")]
    {
        let (a, txns) = apply(&mut s, T0 + 1, &c);
        assert_eq!(a.outcome, Outcome::Rejected(Rejection::IdempotencyKeyReused), "{c:?}");
        assert!(txns.is_empty());
    }
    assert_eq!(s.dump(), before);
}

#[test]
fn explicit_ttl_is_part_of_the_fingerprint_default_is_not() {
    let mut a = reserve("o1", "sku-1", 1, "k");
    let mut b = a.clone();
    if let (Command::Reserve(x), Command::Reserve(y)) = (&mut a, &mut b) {
        x.ttl_ms = 1_000;
        y.ttl_ms = 2_000;
        assert_eq!(a.fingerprint(), b.fingerprint());
    }
    if let (Command::Reserve(x), Command::Reserve(y)) = (&mut a, &mut b) {
        x.ttl_explicit = true;
        y.ttl_explicit = true;
    }
    assert_ne!(a.fingerprint(), b.fingerprint());
}

#[test]
fn idempotency_keys_expire_after_their_ttl() {
    let mut s = Shard::new(ShardConfig { idempotency_ttl_ms: 1_000, ..ShardConfig::new(0) });
    apply(&mut s, T0, &receive("sku-1", DEFAULT_WAREHOUSE, 10, "k"));
    assert!(apply(&mut s, T0 + 999, &receive("sku-1", DEFAULT_WAREHOUSE, 10, "k")).0.replayed);
    // After the TTL the key is new again: this receive adds stock.
    let (a, _) = apply(&mut s, T0 + 1_000, &receive("sku-1", DEFAULT_WAREHOUSE, 10, "k"));
    assert!(a.changed && !a.replayed);
    assert_eq!(levels(&s, "sku-1"), lv(20, 0, 0));
    assert_eq!(s.stats().idempotency_keys, 1);
    assert_eq!(s.purge_idempotency(T0 + 2_000, 10), 2);
    assert_eq!(s.stats().idempotency_keys, 0);
}

#[test]
fn confirm_moves_reserved_to_sold_once() {
    let mut s = stocked(10);
    let id = reserved_id(&apply(&mut s, T0, &reserve("o1", "sku-1", 4, "k1")).0);
    let (a, txns) = apply(&mut s, T0 + 1, &confirm(id, "pay-1", "k2"));
    assert_eq!(a.outcome, Outcome::Confirmed { reservation_id: id });
    assert_eq!((txns[0].kind, txns[0].after, txns[0].detail.as_str()), (TxnKind::Confirm, lv(6, 0, 4), "pay-1"));
    // A repeated payment callback under another key: same answer, nothing deducted.
    let (a, txns) = apply(&mut s, T0 + 2, &confirm(id, "pay-1", "k3"));
    assert_eq!(a.outcome, Outcome::Confirmed { reservation_id: id });
    assert!(!a.changed && txns.is_empty());
    assert_eq!(levels(&s, "sku-1"), lv(6, 0, 4));
    assert_eq!(
        apply(&mut s, T0 + 3, &confirm(id, "pay-2", "k4")).0.outcome,
        Outcome::Rejected(Rejection::PaymentMismatch)
    );
    assert_eq!(apply(&mut s, T0 + 3, &release(id, "k5")).0.outcome, Outcome::Rejected(Rejection::ReservationConfirmed));
    let view = s.reservation(id).unwrap();
    assert_eq!((view.status, view.payment_id.as_deref()), (ReservationStatus::Confirmed, Some("pay-1")));
}

#[test]
fn confirm_after_expire_at_expires_the_hold_even_before_the_timer() {
    let mut s = stocked(10);
    let id = reserved_id(&apply(&mut s, T0, &reserve("o1", "sku-1", 4, "k1")).0);
    let (a, txns) = apply(&mut s, T0 + TTL, &confirm(id, "pay-1", "k2"));
    assert_eq!(a.outcome, Outcome::Rejected(Rejection::ReservationExpired));
    assert!(a.changed);
    assert_eq!((txns[0].kind, txns[0].detail.as_str()), (TxnKind::Release, REASON_TIMEOUT));
    assert_eq!(levels(&s, "sku-1"), lv(10, 0, 0));
    assert_eq!(s.reservation(id).unwrap().status, ReservationStatus::Expired);
    // The stored answer for that key, and the state-derived answer for a new one.
    assert_eq!(apply(&mut s, T0 + TTL + 1, &confirm(id, "pay-1", "k2")).0.outcome, a.outcome);
    assert_eq!(apply(&mut s, T0 + TTL + 1, &confirm(id, "pay-1", "k3")).0.outcome, a.outcome);
}

#[test]
fn confirm_and_release_of_missing_or_finished_holds() {
    let mut s = stocked(10);
    let id = reserved_id(&apply(&mut s, T0, &reserve("o1", "sku-1", 4, "k1")).0);
    let missing = ReservationId::new(3, 999);
    let foreign = ReservationId::new(4, id.seq());
    for bad in [missing, foreign] {
        assert_eq!(
            apply(&mut s, T0, &confirm(bad, "p", "x1")).0.outcome,
            Outcome::Rejected(Rejection::ReservationNotFound)
        );
        assert_eq!(apply(&mut s, T0, &release(bad, "x2")).0.outcome, Outcome::Rejected(Rejection::ReservationNotFound));
        assert!(s.reservation(bad).is_none());
    }
    let (a, txns) = apply(&mut s, T0 + 1, &release(id, "k2"));
    assert_eq!(a.outcome, Outcome::Released { reservation_id: id, status: ReservationStatus::Released });
    assert_eq!((txns[0].kind, txns[0].detail.as_str()), (TxnKind::Release, "CANCELLED"));
    assert_eq!(levels(&s, "sku-1"), lv(10, 0, 0));
    // Releasing again changes nothing and says so.
    let (a, txns) = apply(&mut s, T0 + 2, &release(id, "k3"));
    assert_eq!(a.outcome, Outcome::Released { reservation_id: id, status: ReservationStatus::Released });
    assert!(!a.changed && txns.is_empty());
    assert_eq!(
        apply(&mut s, T0 + 3, &confirm(id, "p", "k4")).0.outcome,
        Outcome::Rejected(Rejection::ReservationReleased)
    );
}

#[test]
fn expire_releases_only_due_holds_with_reason_timeout() {
    let mut s = stocked(10);
    let a = reserved_id(&apply(&mut s, T0, &reserve("o1", "sku-1", 1, "k1")).0);
    let b = reserved_id(&apply(&mut s, T0 + 10, &reserve("o2", "sku-1", 2, "k2")).0);
    let c = reserved_id(&apply(&mut s, T0 + 20, &reserve("o3", "sku-1", 3, "k3")).0);
    apply(&mut s, T0 + 21, &confirm(c, "p", "k4"));
    let now = T0 + TTL + 10;
    assert_eq!(s.due_expirations(now, 100), vec![a, b]);
    assert_eq!(s.due_expirations(now, 1), vec![a]);
    assert_eq!(s.expiry_backlog(now), 2);
    // An id that is not due (or not a hold) is skipped.
    let (x, txns) = apply(&mut s, now, &Command::Expire(Expire { ids: vec![a, b, c, ReservationId::new(3, 77)] }));
    assert_eq!(x.outcome, Outcome::Expired { count: 2 });
    assert!(txns.iter().all(|t| t.kind == TxnKind::Release && t.detail == REASON_TIMEOUT));
    assert_eq!(levels(&s, "sku-1"), lv(7, 0, 3));
    assert_eq!(s.expiry_backlog(now), 0);
    assert_eq!(s.reservation(b).unwrap().status, ReservationStatus::Expired);
    assert_eq!(
        apply(&mut s, now, &release(a, "k5")).0.outcome,
        Outcome::Released { reservation_id: a, status: ReservationStatus::Expired }
    );
    let (nothing, _) = apply(&mut s, now, &Command::Expire(Expire { ids: vec![a] }));
    assert!(!nothing.changed);
}

#[test]
fn rollback_restores_exactly_the_state_before_the_batch() {
    let mut s = stocked(10);
    let id = reserved_id(&apply(&mut s, T0, &reserve("o1", "sku-1", 2, "k1")).0);
    let confirmed = reserved_id(&apply(&mut s, T0, &reserve("o9", "sku-1", 1, "k9")).0);
    let before = s.dump();
    s.begin_batch();
    apply(&mut s, T0 + 1, &receive("sku-new", "w-new", 5, "k2"));
    apply(&mut s, T0 + 1, &receive("sku-1", "w2", 5, "k3"));
    apply(&mut s, T0 + 1, &reserve("o2", "sku-1", 3, "k4"));
    apply(&mut s, T0 + 1, &confirm(confirmed, "p", "k5"));
    apply(&mut s, T0 + TTL, &Command::Expire(Expire { ids: vec![id] }));
    apply(&mut s, T0 + TTL, &reserve("o1", "sku-new", 1, "k1-other-key"));
    s.rollback_batch();
    s.check_invariants().unwrap();
    assert_eq!(s.dump(), before);
    assert!(s.stock("sku-new").is_none());
    // The new SKU's id and the new warehouse ids are gone too: the image is
    // the one of a shard that never saw them.
    let image = s.image();
    assert_eq!((image.sku_ids.as_str(), image.warehouses.clone()), ("sku-1", vec![DEFAULT_WAREHOUSE.to_string()]));
    assert_eq!(Shard::from_image(s.config().clone(), image).dump(), before);
    // Ids handed out in the rolled-back batch are handed out again.
    s.begin_batch();
    let again = reserved_id(&apply(&mut s, T0 + TTL, &reserve("o3", "sku-1", 1, "k6")).0);
    s.commit_batch();
    assert_eq!(again.seq(), confirmed.seq() + 1);
}

#[test]
fn order_query_lists_the_orders_holds() {
    let mut s = stocked(10);
    apply(&mut s, T0, &receive("sku-2", DEFAULT_WAREHOUSE, 10, "rcv-2"));
    let a = reserved_id(&apply(&mut s, T0, &reserve("o1", "sku-1", 1, "k1")).0);
    let b = reserved_id(&apply(&mut s, T0, &reserve("o1", "sku-2", 1, "k2")).0);
    apply(&mut s, T0, &reserve("o2", "sku-2", 1, "k3"));
    let ids: Vec<_> = s.order("o1").iter().map(|v| v.reservation_id).collect();
    assert_eq!(ids, vec![a, b]);
    assert!(s.order("nobody").is_empty());
}

#[test]
fn sku_routing_is_stable_and_spread() {
    assert_eq!(shard_for_sku("sku-1", 1), 0);
    let counts = (0..10_000).fold([0u32; 4], |mut c, i| {
        c[shard_for_sku(&format!("sku-{i}"), 4) as usize] += 1;
        c
    });
    assert!(counts.iter().all(|&c| c > 2_000), "{counts:?}");
}

#[test]
fn oversold_scan_walks_the_shard_in_slices() {
    let mut s = shard();
    for i in 0..5 {
        apply(&mut s, T0, &receive(&format!("sku-{i}"), DEFAULT_WAREHOUSE, 3, &format!("k{i}")));
    }
    assert_eq!(s.scan_oversold(0, 2), (2, 0));
    assert_eq!(s.scan_oversold(2, 2), (4, 0));
    assert_eq!(s.scan_oversold(4, 2), (0, 0), "wraps after the last SKU");
    assert_eq!(s.scan_oversold(99, 2), (0, 0));
}

#[test]
fn an_image_restores_the_same_shard() {
    let mut s = stocked(10);
    apply(&mut s, T0, &receive("sku-1", "w2", 4, "k-w2"));
    let a = reserved_id(&apply(&mut s, T0 + 1, &reserve("o1", "sku-1", 2, "k1")).0);
    let b = reserved_id(&apply(&mut s, T0 + 2, &reserve("o2", "sku-1", 3, "k2")).0);
    apply(&mut s, T0 + 3, &confirm(a, "p", "k3"));
    apply(&mut s, T0 + 4, &release(b, "k4"));
    apply(&mut s, T0 + 5, &reserve("o3", "sku-1", 1, "k5"));
    let mut restored = Shard::from_image(s.config().clone(), s.image());
    restored.check_invariants().unwrap();
    assert_eq!(restored.dump(), s.dump());
    // It goes on exactly as the original: same ids, same idempotent replays.
    for shard in [&mut s, &mut restored] {
        assert!(apply(shard, T0 + 6, &reserve("o1", "sku-1", 2, "k1")).0.replayed);
        assert_eq!(reserved_id(&apply(shard, T0 + 7, &reserve("o4", "sku-1", 1, "k6")).0).seq(), 4);
    }
    assert_eq!(restored.dump(), s.dump());
    assert_eq!(restored.due_expirations(T0 + TTL + 10, 10), s.due_expirations(T0 + TTL + 10, 10));
}

#[test]
fn finished_holds_leave_after_retention_and_memory_stays_flat() {
    let mut s = Shard::new(ShardConfig { idempotency_ttl_ms: 72 * HOUR_MS, ..ShardConfig::new(0) });
    apply(&mut s, T0, &receive("hot", DEFAULT_WAREHOUSE, ROW_UNITS_MAX / 4, "rcv"));
    let mut first = None;
    let mut peak = 0;
    // Ten simulated days: every hour 100 holds, confirmed or released.
    for hour in 0..240u64 {
        let at = T0 + hour * HOUR_MS;
        for n in 0..100 {
            let order = format!("h{hour}-{n}");
            let id = reserved_id(&apply(&mut s, at, &reserve(&order, "hot", 1, &format!("{order}:r"))).0);
            first.get_or_insert(id);
            let finish =
                if n % 3 == 0 { release(id, &format!("{order}:x")) } else { confirm(id, "p", &format!("{order}:c")) };
            apply(&mut s, at, &finish);
        }
        s.purge_holds(at, usize::MAX);
        s.purge_idempotency(at, usize::MAX);
        let stats = s.stats();
        peak = peak.max(stats.holds);
        if hour >= 72 {
            // 48 h of holds and 72 h of keys, never more.
            assert!(stats.holds <= 49 * 100, "hour {hour}: {} holds", stats.holds);
            assert!(stats.idempotency_keys <= 73 * 200 + 1, "hour {hour}: {} keys", stats.idempotency_keys);
        }
    }
    assert!(peak >= 48 * 100, "retention kept less than 48 h: {peak}");
    // The first hold is gone for every lookup, and its order line is free.
    let first = first.unwrap();
    let at = T0 + 240 * HOUR_MS;
    assert!(s.reservation(first).is_none());
    assert_eq!(
        apply(&mut s, at, &confirm(first, "p", "late")).0.outcome,
        Outcome::Rejected(Rejection::ReservationNotFound)
    );
    s.check_invariants().unwrap();
}

#[test]
fn a_finished_hold_is_gone_at_retention_even_before_it_is_purged() {
    let mut s = stocked(10);
    let id = reserved_id(&apply(&mut s, T0, &reserve("o1", "sku-1", 2, "k1")).0);
    apply(&mut s, T0 + 1, &release(id, "k2"));
    let gone = T0 + 1 + HOLD_RETENTION_MS;
    assert_eq!(
        apply(&mut s, gone - 1, &release(id, "k3")).0.outcome,
        Outcome::Released { reservation_id: id, status: ReservationStatus::Released }
    );
    // Not purged yet, but already gone: the same outcome as after the purge.
    assert_eq!(apply(&mut s, gone, &release(id, "k4")).0.outcome, Outcome::Rejected(Rejection::ReservationNotFound));
    let line = apply(&mut s, gone, &reserve("o1", "sku-1", 2, "k5")).0;
    assert!(matches!(line.outcome, Outcome::Reserved { .. }), "the order line is free again: {line:?}");
    assert_eq!(s.purge_holds(gone, 10), 1);
    assert!(s.reservation(id).is_none());
}

fn batch(items: &[(&str, &str, u64)], key: &str) -> Command {
    Command::ReceiveBatch(ReceiveBatch {
        items: items
            .iter()
            .map(|&(s, w, q)| ReceiveItem { sku_id: s.into(), warehouse_id: w.into(), qty: q })
            .collect(),
        idem_key: key.into(),
        reference: "import-1".into(),
    })
}

#[test]
fn a_receive_batch_applies_whole_or_not_at_all() {
    let mut s = stocked(10);
    let (a, txns) =
        apply(&mut s, T0, &batch(&[("sku-1", DEFAULT_WAREHOUSE, 5), ("sku-2", "w", 7), ("sku-3", "w", 1)], "b1"));
    assert_eq!(a.outcome, Outcome::ReceivedBatch { rows: 3, units: 13 });
    assert_eq!(txns.len(), 3);
    assert!(txns.iter().all(|t| t.kind == TxnKind::Receive && t.ref_id == "import-1"));
    assert_eq!(levels(&s, "sku-1"), lv(15, 0, 0));
    assert!(
        apply(&mut s, T0, &batch(&[("sku-1", DEFAULT_WAREHOUSE, 5), ("sku-2", "w", 7), ("sku-3", "w", 1)], "b1"))
            .0
            .replayed
    );
    let before = s.dump();
    for (bad, why) in [
        (batch(&[("x", "w", 1), ("sku-1", DEFAULT_WAREHOUSE, u64::MAX)], "b2"), Rejection::QuantityOverflow),
        (batch(&[("x", "w", 1), ("x", "w", 2)], "b3"), Rejection::InvalidBatch),
        (batch(&[("x", "w", 1), ("y", "w", 0)], "b4"), Rejection::InvalidQuantity),
        (batch(&[], "b5"), Rejection::InvalidBatch),
    ] {
        assert_eq!(apply(&mut s, T0, &bad).0.outcome, Outcome::Rejected(why));
    }
    assert_eq!(s.dump(), before, "a rejected batch changes nothing");
}

#[test]
fn a_receive_batch_puts_each_item_on_its_row_whether_the_row_or_sku_existed() {
    let mut s = stocked(10);
    // An existing row, a new warehouse of an existing SKU, a new SKU, and
    // the same new SKU again in a second warehouse (created earlier in this
    // very batch).
    let items = [("sku-1", DEFAULT_WAREHOUSE, 5), ("sku-1", "w2", 2), ("new", "w1", 3), ("new", "w2", 4)];
    let (a, txns) = apply(&mut s, T0, &batch(&items, "b1"));
    assert_eq!(a.outcome, Outcome::ReceivedBatch { rows: 4, units: 14 });
    let befores: Vec<u64> = txns.iter().map(|t| t.before.available).collect();
    assert_eq!(befores, [10, 0, 0, 0]);
    let rows = |sku: &str| -> Vec<(String, u64)> {
        s.stock(sku).unwrap().warehouses.iter().map(|w| (w.warehouse_id.clone(), w.row.levels.available)).collect()
    };
    assert_eq!(rows("sku-1"), [(DEFAULT_WAREHOUSE.to_string(), 15), ("w2".to_string(), 2)]);
    assert_eq!(rows("new"), [("w1".to_string(), 3), ("w2".to_string(), 4)]);
    assert_eq!((s.stats().skus, s.stats().rows), (2, 4), "one index entry per SKU");
    s.check_invariants().unwrap();
}

#[test]
fn receipts_past_the_32_bit_row_limit_are_rejected_and_change_nothing() {
    let mut s = stocked(10);
    let before = s.dump();
    let over = ROW_UNITS_MAX - 9;
    let (a, txns) = apply(&mut s, T0, &receive("sku-1", DEFAULT_WAREHOUSE, over, "k1"));
    assert_eq!((a.outcome, a.changed, txns.len()), (Outcome::Rejected(Rejection::QuantityOverflow), false, 0));
    // A new row (or a new SKU) cannot start above the limit either.
    for (sku, wh) in [("sku-1", "w2"), ("sku-new", DEFAULT_WAREHOUSE)] {
        let a = apply(&mut s, T0, &receive(sku, wh, ROW_UNITS_MAX + 1, "k2")).0;
        assert_eq!(a.outcome, Outcome::Rejected(Rejection::QuantityOverflow), "{sku}/{wh}");
    }
    assert_eq!(s.dump(), before, "a rejected receipt changes nothing");
    assert_eq!(s.image().warehouses, vec![DEFAULT_WAREHOUSE.to_string()], "no warehouse id interned");
    assert!(s.stock("sku-new").is_none());
    // Exactly up to the limit is fine, and the row then works as usual.
    let (a, _) = apply(&mut s, T0, &receive("sku-1", DEFAULT_WAREHOUSE, over - 1, "k3"));
    let full = lv(ROW_UNITS_MAX, 0, 0);
    assert_eq!(a.outcome, Outcome::Received { levels: full, version: 2, updated_at: T0 });
    let (a, _) = apply(&mut s, T0, &receive("sku-1", DEFAULT_WAREHOUSE, 1, "k4"));
    assert_eq!(a.outcome, Outcome::Rejected(Rejection::QuantityOverflow));
    let id = reserved_id(&apply(&mut s, T0, &reserve("o1", "sku-1", ROW_UNITS_MAX, "k5")).0);
    apply(&mut s, T0, &confirm(id, "p", "k6"));
    assert_eq!(levels(&s, "sku-1"), lv(0, 0, ROW_UNITS_MAX));
    let row = s.stock("sku-1").unwrap().warehouses[0].row;
    assert_eq!(row.received, ROW_UNITS_MAX);
    // Reserving more than a row can hold is simply short stock.
    let a = apply(&mut s, T0, &reserve("o2", "sku-1", u64::MAX, "k7")).0;
    assert_eq!(a.outcome, Outcome::Rejected(Rejection::InsufficientStock { available: 0 }));
    // A batch is checked item by item before anything is applied.
    let before = s.dump();
    for bad in [
        batch(&[("fresh", "w", 1), ("sku-1", DEFAULT_WAREHOUSE, 1)], "b1"),
        batch(&[("fresh", "w", 1), ("other", "w", ROW_UNITS_MAX + 1)], "b2"),
    ] {
        assert_eq!(apply(&mut s, T0, &bad).0.outcome, Outcome::Rejected(Rejection::QuantityOverflow));
    }
    assert_eq!(s.dump(), before);
    assert_eq!(Rejection::QuantityOverflow.code(), "QUANTITY_OVERFLOW");
}

#[test]
fn limits_on_warehouses_and_id_length_are_checked_before_anything_changes() {
    let mut s = shard();
    let long = "s".repeat(SKU_ID_BYTES_MAX + 1);
    let a = apply(&mut s, T0, &receive(&long, DEFAULT_WAREHOUSE, 1, "k1")).0;
    assert_eq!(a.outcome, Outcome::Rejected(Rejection::SkuIdTooLong));
    let a = apply(&mut s, T0, &batch(&[("ok", "w", 1), (&long, "w", 1)], "k2")).0;
    assert_eq!(a.outcome, Outcome::Rejected(Rejection::SkuIdTooLong));
    assert_eq!(s.stats().rows, 0);
    apply(&mut s, T0, &receive(&long[1..], DEFAULT_WAREHOUSE, 1, "k3"));
    assert_eq!(s.stock(&long[1..]).unwrap().sku_id.len(), SKU_ID_BYTES_MAX);
    // One SKU in at most WAREHOUSES_PER_SKU_MAX warehouses, also across the
    // items of one batch.
    let names: Vec<String> = (0..WAREHOUSES_PER_SKU_MAX).map(|i| format!("w{i}")).collect();
    let items: Vec<(&str, &str, u64)> =
        names[..WAREHOUSES_PER_SKU_MAX - 1].iter().map(|w| ("x", w.as_str(), 1)).collect();
    apply(&mut s, T0, &batch(&items, "k4"));
    let before = s.dump();
    let two = batch(&[("x", &names[WAREHOUSES_PER_SKU_MAX - 1], 1), ("x", "one-too-many", 1)], "k5");
    assert_eq!(apply(&mut s, T0, &two).0.outcome, Outcome::Rejected(Rejection::TooManyWarehouses));
    assert_eq!(s.dump(), before);
    apply(&mut s, T0, &receive("x", &names[WAREHOUSES_PER_SKU_MAX - 1], 1, "k6"));
    let a = apply(&mut s, T0, &receive("x", "one-too-many", 1, "k7")).0;
    assert_eq!(a.outcome, Outcome::Rejected(Rejection::TooManyWarehouses));
    // Warehouses are listed in the order they were added.
    let stock = s.stock("x").unwrap();
    assert_eq!(stock.warehouses.len(), WAREHOUSES_PER_SKU_MAX);
    assert!(stock.warehouses.iter().zip(&names).all(|(w, n)| w.warehouse_id == *n));
}

#[test]
fn a_batch_may_add_warehouse_ids_up_to_the_shards_limit_and_no_further() {
    let mut s = shard();
    let names: Vec<String> = (0..WAREHOUSE_IDS_MAX + 1).map(|i| format!("w{i}")).collect();
    let filled = WAREHOUSE_IDS_MAX - 2;
    let items: Vec<(&str, &str, u64)> = names[..filled].iter().map(|w| ("base", w.as_str(), 1)).collect();
    assert!(apply(&mut s, T0, &batch(&items[..WAREHOUSES_PER_SKU_MAX - 1], "k0")).0.changed);
    let others: Vec<String> = (0..filled).map(|i| format!("sku-{i}")).collect();
    let items: Vec<(&str, &str, u64)> =
        (WAREHOUSES_PER_SKU_MAX - 1..filled).map(|i| (others[i].as_str(), names[i].as_str(), 1)).collect();
    assert!(apply(&mut s, T0, &batch(&items, "k1")).0.changed);
    let before = s.dump();
    // Three new warehouse ids are one too many, however the items repeat them.
    let (a, b, c) = (&names[filled], &names[filled + 1], &names[filled + 2]);
    let three = batch(&[("n1", a, 1), ("n2", b, 1), ("n3", a, 1), ("n4", c, 1)], "k2");
    assert_eq!(apply(&mut s, T0, &three).0.outcome, Outcome::Rejected(Rejection::TooManyWarehouses));
    assert_eq!(s.dump(), before);
    let two = batch(&[("n1", a, 1), ("n2", b, 1), ("n3", a, 1), ("n4", "w0", 1)], "k3");
    assert!(apply(&mut s, T0, &two).0.changed);
    assert_eq!(
        apply(&mut s, T0, &receive("n5", c, 1, "k4")).0.outcome,
        Outcome::Rejected(Rejection::TooManyWarehouses)
    );
    assert!(apply(&mut s, T0, &receive("n5", b, 1, "k5")).0.changed);
}

#[test]
fn multi_warehouse_skus_keep_their_rows_together_and_in_order() {
    let mut s = shard();
    apply(&mut s, T0, &receive("a", "w1", 1, "k1"));
    apply(&mut s, T0, &receive("b", "w2", 2, "k2"));
    apply(&mut s, T0, &receive("a", "w3", 3, "k3"));
    apply(&mut s, T0, &receive("b", "w1", 4, "k4"));
    apply(&mut s, T0, &receive("a", "w2", 5, "k5"));
    let rows: Vec<(String, String, u64)> =
        s.dump().rows.into_iter().map(|(sku, wh, r)| (sku, wh, r.levels.available)).collect();
    let want = [("a", "w1", 1), ("a", "w3", 3), ("a", "w2", 5), ("b", "w2", 2), ("b", "w1", 4)];
    assert_eq!(rows, want.map(|(s, w, q)| (s.to_string(), w.to_string(), q)));
    // One hold per order line: per SKU, whatever the warehouse.
    let id = reserved_id(&apply(&mut s, T0, &reserve_in("o1", "a", "w3", 2, "r1")).0);
    let again = apply(&mut s, T0, &reserve_in("o1", "a", "w3", 2, "r2")).0;
    assert_eq!(again.outcome, Outcome::Reserved { reservation_id: id, expire_at: T0 + TTL });
    let other = apply(&mut s, T0, &reserve_in("o1", "a", "w2", 2, "r3")).0;
    assert!(matches!(other.outcome, Outcome::Rejected(Rejection::DuplicateOrderLine { .. })));
    assert!(matches!(apply(&mut s, T0, &reserve_in("o1", "b", "w2", 2, "r4")).0.outcome, Outcome::Reserved { .. }));
    let view = s.reservation(id).unwrap();
    assert_eq!((view.sku_id.as_str(), view.warehouse_id.as_str()), ("a", "w3"));
    let restored = Shard::from_image(s.config().clone(), s.image());
    restored.check_invariants().unwrap();
    assert_eq!(restored.dump(), s.dump());
    assert_eq!(restored.image(), s.image(), "the image is deterministic");
}

fn reserve_in(order: &str, sku: &str, wh: &str, qty: u64, key: &str) -> Command {
    let mut c = reserve(order, sku, qty, key);
    if let Command::Reserve(r) = &mut c {
        r.warehouse_id = wh.into();
    }
    c
}

#[test]
fn a_hold_stores_one_detail_string() {
    // Payment id (confirmed) or release reason (released, expired): never both.
    assert_eq!(std::mem::size_of::<crate::state::Hold>(), 88);
    let mut s = stocked(10);
    let a = reserved_id(&apply(&mut s, T0, &reserve("o1", "sku-1", 1, "k1")).0);
    let b = reserved_id(&apply(&mut s, T0, &reserve("o2", "sku-1", 1, "k2")).0);
    apply(&mut s, T0, &confirm(a, "pay-1", "k3"));
    apply(&mut s, T0, &release(b, "k4"));
    let (a, b) = (s.reservation(a).unwrap(), s.reservation(b).unwrap());
    assert_eq!((a.payment_id.as_deref(), a.release_reason.as_deref()), (Some("pay-1"), None));
    assert_eq!((b.payment_id.as_deref(), b.release_reason.as_deref()), (None, Some("CANCELLED")));
}

#[test]
fn evicted_records_are_asked_for_decided_from_the_facts_and_restored_by_a_rollback() {
    use crate::{cold_changes, ColdChange, ColdFacts, ColdHold, Evict};
    let mut s = Shard::new(ShardConfig::new(0));
    let mut entries = Vec::new();
    let mut apply = |s: &mut Shard, at, command: Command| {
        let mut txns = Vec::new();
        let applied = s.apply(at, &command, &mut txns);
        let cold = None;
        entries.push(Entry { seq: 0, at, trace_id: 0, operator: String::new(), command, txns, cold });
        applied
    };
    apply(&mut s, 1, receive("sku", DEFAULT_WAREHOUSE, 10, "r"));
    let id = match apply(&mut s, 2, reserve("o", "sku", 2, "k1")).outcome {
        Outcome::Reserved { reservation_id, .. } => reservation_id,
        other => panic!("{other:?}"),
    };
    apply(&mut s, 3, confirm(id, "pay", "k2"));
    // The cold tier's records, from the entries.
    let mut holds: Vec<ColdHold> = Vec::new();
    for e in &entries {
        for change in cold_changes(IDEMPOTENCY_TTL_MS, e, |seq| holds.iter().find(|h| h.seq == seq).cloned()).unwrap() {
            if let ColdChange::Hold(h) = change {
                holds.retain(|old| old.seq != h.seq);
                holds.push(h);
            }
        }
    }
    let before = s.dump();
    assert_eq!((s.stats().cold_filter_keys, s.stats().cold_filter_bytes), (0, 0));
    s.begin_batch();
    let evicted = s.apply(10, &Command::Evict(Evict { holds_before: 4, keys_before: 4 }), &mut Vec::new());
    assert_eq!(evicted.outcome, Outcome::Evicted { holds: 1, keys: 3 });
    let stats = s.stats();
    assert_eq!(stats.cold_filter_keys, 5, "the hold, its order and three keys are noted in filters");
    assert!(stats.cold_filter_bytes > 0);
    assert!(s.reservation(id).is_none(), "the hold left memory");
    s.rollback_batch();
    assert_eq!(s.dump(), before, "a rollback brings evicted records back");
    s.apply(10, &Command::Evict(Evict { holds_before: 4, keys_before: 4 }), &mut Vec::new());

    // A repeated payment callback under a new key needs the hold.
    let again = confirm(id, "pay", "k3");
    let needs = s.apply_with(11, &again, &ColdFacts::NONE, &mut Vec::new()).unwrap_err();
    assert_eq!(needs.hold, Some(id.seq()));
    let facts = ColdFacts { hold: Some((id.seq(), holds.first().cloned())), ..ColdFacts::NONE };
    let applied = s.apply_with(11, &again, &facts, &mut Vec::new()).unwrap();
    assert_eq!(applied.outcome, Outcome::Confirmed { reservation_id: id });
    assert!(!applied.changed, "nothing deducted twice");
    let other = s.apply_with(11, &confirm(id, "other", "k4"), &facts, &mut Vec::new()).unwrap();
    assert_eq!(other.outcome, Outcome::Rejected(Rejection::PaymentMismatch));
}

// ----- operator controls ---------------------------------------------------

fn freeze(sku: &str, wh: Option<&str>, frozen: bool, key: &str) -> Command {
    Command::Freeze(Freeze {
        sku_id: sku.into(),
        warehouse_id: wh.map(Into::into),
        frozen,
        reason: "oversell page".into(),
        idem_key: key.into(),
    })
}

fn propose(sku: &str, delta: i64, operator: &str, key: &str) -> Command {
    Command::ProposeAdjustment(Box::new(ProposeAdjustment {
        sku_id: sku.into(),
        warehouse_id: DEFAULT_WAREHOUSE.into(),
        delta,
        reason: "damaged".into(),
        operator: operator.into(),
        ttl_ms: 24 * HOUR_MS,
        idem_key: key.into(),
    }))
}

fn decide(id: AdjustmentId, approve: bool, operator: &str, key: &str) -> Command {
    Command::DecideAdjustment(DecideAdjustment {
        adjustment_id: id,
        approve,
        operator: operator.into(),
        reason: if approve { String::new() } else { "not so".into() },
        idem_key: key.into(),
    })
}

fn dispatch(sku: &str, from: &str, to: &str, qty: u64, key: &str) -> Command {
    Command::DispatchTransfer(Box::new(DispatchTransfer {
        sku_id: sku.into(),
        from_warehouse_id: from.into(),
        to_warehouse_id: to.into(),
        qty,
        reason: "rebalance".into(),
        operator: "ann".into(),
        expected_in_ms: Some(HOUR_MS),
        idem_key: key.into(),
    }))
}

fn finish(id: TransferId, arrive: bool, key: &str) -> Command {
    Command::FinishTransfer(FinishTransfer {
        transfer_id: id,
        arrive,
        operator: "bob".into(),
        reason: String::new(),
        idem_key: key.into(),
    })
}

fn rejection(a: &Applied) -> Rejection {
    match a.outcome {
        Outcome::Rejected(r) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn row(s: &Shard, sku: &str, wh: &str) -> StockRow {
    s.stock(sku).unwrap().warehouses.into_iter().find(|w| w.warehouse_id == wh).unwrap().row
}

#[test]
fn a_frozen_row_refuses_reserves_but_finishes_its_holds() {
    let mut s = stocked(10);
    let (held, _) = apply(&mut s, T0, &reserve("o1", "sku-1", 2, "r1"));
    let (held2, _) = apply(&mut s, T0, &reserve("o2", "sku-1", 2, "r2"));
    let (a, txns) = apply(&mut s, T0 + 1, &freeze("sku-1", None, true, "f1"));
    assert_eq!(a.outcome, Outcome::Frozen { rows: 1 });
    assert_eq!((txns[0].kind, txns[0].before, txns[0].after), (TxnKind::Freeze, lv(6, 4, 0), lv(6, 4, 0)));
    assert!(row(&s, "sku-1", DEFAULT_WAREHOUSE).ops.frozen);
    let before = s.dump();
    let (a, _) = apply(&mut s, T0 + 2, &reserve("o3", "sku-1", 1, "r3"));
    assert_eq!(rejection(&a), Rejection::SkuFrozen);
    assert_eq!(s.dump(), before, "a refused reserve changes nothing");
    // The buyer who paid gets the unit; a cancelled hold goes back.
    assert!(apply(&mut s, T0 + 3, &confirm(reserved_id(&held), "pay", "c1")).0.changed);
    assert!(apply(&mut s, T0 + 3, &release(reserved_id(&held2), "x1")).0.changed);
    assert_eq!(levels(&s, "sku-1"), lv(8, 0, 2));
    // Freezing a frozen SKU changes nothing; unfreezing lets reserves in.
    let (a, _) = apply(&mut s, T0 + 4, &freeze("sku-1", None, true, "f2"));
    assert_eq!((a.outcome, a.changed), (Outcome::Frozen { rows: 0 }, false));
    assert!(apply(&mut s, T0 + 5, &freeze("sku-1", Some(DEFAULT_WAREHOUSE), false, "u1")).0.changed);
    assert!(apply(&mut s, T0 + 6, &reserve("o3", "sku-1", 1, "r3")).0.changed);
    let (a, _) = apply(&mut s, T0 + 7, &freeze("nope", None, true, "f3"));
    assert_eq!(rejection(&a), Rejection::SkuNotFound);
}

#[test]
fn an_adjustment_applies_only_when_another_operator_approves() {
    let mut s = stocked(10);
    let (a, txns) = apply(&mut s, T0, &propose("sku-1", -3, "ann", "p1"));
    let Outcome::AdjustmentProposed { id } = a.outcome else { panic!("{a:?}") };
    assert_eq!(id.to_string(), "adj-3-1");
    assert_eq!((txns[0].kind, txns[0].delta()), (TxnKind::AdjustProposed, -3));
    assert_eq!(levels(&s, "sku-1"), lv(10, 0, 0), "nothing changes yet");
    // The proposer cannot approve their own.
    let before = s.dump();
    assert_eq!(rejection(&apply(&mut s, T0 + 1, &decide(id, true, "ann", "d1")).0), Rejection::SameOperator);
    assert_eq!(s.dump(), before);
    let (a, txns) = apply(&mut s, T0 + 2, &decide(id, true, "bob", "d2"));
    assert_eq!(a.outcome, Outcome::AdjustmentDecided { id, status: AdjustmentStatus::Applied });
    assert_eq!((txns[0].kind, txns[0].before, txns[0].after), (TxnKind::AdjustApplied, lv(10, 0, 0), lv(7, 0, 0)));
    let r = row(&s, "sku-1", DEFAULT_WAREHOUSE);
    assert_eq!((r.received, r.ops.adjusted, r.levels.available), (10, -3, 7));
    let view = s.adjustment(id).unwrap().adjustment;
    assert_eq!((view.status, view.decided_by.as_str(), view.after), (AdjustmentStatus::Applied, "bob", lv(7, 0, 0)));
    // Decided once: another decision is refused.
    let (a, _) = apply(&mut s, T0 + 3, &decide(id, false, "carl", "d3"));
    assert_eq!(rejection(&a), Rejection::AdjustmentNotPending { status: AdjustmentStatus::Applied });
}

#[test]
fn a_write_off_beyond_available_stays_pending_and_pending_ones_expire() {
    let mut s = stocked(10);
    apply(&mut s, T0, &reserve("o1", "sku-1", 8, "r1"));
    let Outcome::AdjustmentProposed { id } = apply(&mut s, T0, &propose("sku-1", -5, "ann", "p1")).0.outcome else {
        panic!()
    };
    let (a, _) = apply(&mut s, T0 + 1, &decide(id, true, "bob", "d1"));
    assert_eq!(rejection(&a), Rejection::InsufficientStock { available: 2 });
    assert_eq!(s.adjustment(id).unwrap().adjustment.status, AdjustmentStatus::Pending);
    // Rejected by anyone, the proposer included.
    let Outcome::AdjustmentProposed { id: other } = apply(&mut s, T0 + 1, &propose("sku-1", 4, "ann", "p2")).0.outcome
    else {
        panic!()
    };
    let (a, _) = apply(&mut s, T0 + 2, &decide(other, false, "ann", "d2"));
    assert_eq!(a.outcome, Outcome::AdjustmentDecided { id: other, status: AdjustmentStatus::Rejected });
    // The timer expires what is still pending after its time...
    let later = T0 + 24 * HOUR_MS;
    assert_eq!(s.due_adjustment_expirations(later, 10), vec![id]);
    let (a, txns) = apply(&mut s, later, &Command::ExpireAdjustments(ExpireAdjustments { ids: vec![id, other] }));
    assert_eq!(a.outcome, Outcome::AdjustmentsExpired { count: 1 });
    assert_eq!(txns[0].kind, TxnKind::AdjustExpired);
    assert_eq!(s.adjustment(id).unwrap().adjustment.status, AdjustmentStatus::Expired);
    // ...and an approval that comes after its time, before the timer, expires it too.
    let Outcome::AdjustmentProposed { id: late } = apply(&mut s, later, &propose("sku-1", 1, "ann", "p3")).0.outcome
    else {
        panic!()
    };
    let (a, _) = apply(&mut s, later + 24 * HOUR_MS, &decide(late, true, "bob", "d4"));
    assert_eq!(
        (rejection(&a), a.changed),
        (Rejection::AdjustmentNotPending { status: AdjustmentStatus::Expired }, true)
    );
    assert_eq!(levels(&s, "sku-1"), lv(2, 8, 0));
}

#[test]
fn a_transfer_moves_units_in_transit_then_arrives_or_goes_back() {
    let mut s = stocked(10);
    let (a, txns) = apply(&mut s, T0, &dispatch("sku-1", DEFAULT_WAREHOUSE, "east", 4, "t1"));
    let Outcome::TransferDispatched { id } = a.outcome else { panic!("{a:?}") };
    assert_eq!(id.to_string(), "trf-3-1");
    let kinds: Vec<_> = txns.iter().map(|t| (t.kind, t.warehouse_id.as_str(), t.order_id.as_str())).collect();
    assert_eq!(kinds, [(TxnKind::TransferOut, "default", "east"), (TxnKind::TransferIncoming, "east", "default")]);
    let (from, to) = (row(&s, "sku-1", DEFAULT_WAREHOUSE), row(&s, "sku-1", "east"));
    assert_eq!((from.levels.available, from.received, from.ops.transferred_out), (6, 10, 4));
    assert_eq!((to.levels.available, to.received, to.ops.in_transit), (0, 0, 4), "the destination row is created");
    assert!(!s.transfer(id).unwrap().transfer.overdue(T0 + HOUR_MS));
    assert!(s.transfer(id).unwrap().transfer.overdue(T0 + HOUR_MS + 1));
    assert_eq!(s.overdue_transfers(T0 + 2 * HOUR_MS), 1);
    let (a, _) = apply(&mut s, T0 + 1, &finish(id, true, "a1"));
    assert_eq!(a.outcome, Outcome::TransferFinished { id, status: TransferStatus::Arrived });
    let to = row(&s, "sku-1", "east");
    assert_eq!((to.levels.available, to.ops.in_transit, to.ops.transferred_in), (4, 0, 4));
    let (a, _) = apply(&mut s, T0 + 2, &finish(id, false, "a2"));
    assert_eq!(rejection(&a), Rejection::TransferNotInTransit { status: TransferStatus::Arrived });
    // Cancelled: the units are back where they left.
    let Outcome::TransferDispatched { id: back } =
        apply(&mut s, T0 + 3, &dispatch("sku-1", "east", DEFAULT_WAREHOUSE, 3, "t2")).0.outcome
    else {
        panic!()
    };
    apply(&mut s, T0 + 4, &finish(back, false, "c1"));
    let (from, to) = (row(&s, "sku-1", "east"), row(&s, "sku-1", DEFAULT_WAREHOUSE));
    assert_eq!((from.levels.available, from.ops.transferred_out, to.ops.in_transit), (4, 0, 0));
    assert_eq!(levels(&s, "sku-1"), lv(10, 0, 0), "a transfer never makes or loses a unit");
    // Refusals change nothing.
    let before = s.dump();
    let refused = [
        (dispatch("sku-1", "east", "east", 1, "t3"), Rejection::SameWarehouse),
        (dispatch("sku-1", "east", "west", 5, "t4"), Rejection::InsufficientStock { available: 4 }),
        (dispatch("sku-1", "north", "east", 1, "t5"), Rejection::SkuNotFound),
        (dispatch("sku-1", "east", "west", 0, "t6"), Rejection::InvalidQuantity),
        (finish(TransferId::new(3, 99), true, "t7"), Rejection::TransferNotFound),
    ];
    for (command, expected) in refused {
        assert_eq!(rejection(&apply(&mut s, T0 + 5, &command).0), expected, "{command:?}");
    }
    assert_eq!(s.dump(), before);
}

#[test]
fn operator_state_survives_an_image_and_a_rollback() {
    let mut s = stocked(10);
    apply(&mut s, T0, &freeze("sku-1", None, true, "f1"));
    apply(&mut s, T0, &propose("sku-1", 2, "ann", "p1"));
    apply(&mut s, T0, &dispatch("sku-1", DEFAULT_WAREHOUSE, "east", 4, "t1"));
    let restored = Shard::from_image(s.config().clone(), s.image());
    restored.check_invariants().unwrap();
    assert_eq!(restored.dump(), s.dump());
    let before = s.dump();
    s.begin_batch();
    apply(&mut s, T0 + 1, &freeze("sku-1", None, false, "f2"));
    apply(&mut s, T0 + 1, &decide(AdjustmentId::new(3, 1), true, "bob", "d1"));
    apply(&mut s, T0 + 1, &finish(TransferId::new(3, 1), false, "c1"));
    apply(&mut s, T0 + 1, &dispatch("sku-1", DEFAULT_WAREHOUSE, "west", 1, "t2"));
    s.rollback_batch();
    s.check_invariants().unwrap();
    assert_eq!(s.dump(), before);
}

// ----- sale policies ---------------------------------------------------------

fn set_policy(sku: &str, policy: Option<SalePolicy>, key: &str) -> Command {
    Command::SetPolicy(Box::new(SetPolicy { sku_id: sku.into(), policy, operator: "ann".into(), idem_key: key.into() }))
}

fn reserve_as(order: &str, qty: u64, buyer: &str, channel: &str, key: &str) -> Command {
    let Command::Reserve(reserve) = reserve(order, "sku-1", qty, key) else { unreachable!() };
    Command::ReserveAs(Box::new(ReserveAs { reserve, buyer_id: buyer.into(), channel: channel.into() }))
}

fn limit(max: u32) -> SalePolicy {
    SalePolicy { max_per_buyer: Some(max), ..SalePolicy::default() }
}

#[test]
fn a_policy_is_journaled_on_the_skus_first_row_and_shown_with_its_stock() {
    let mut s = stocked(10);
    apply(&mut s, T0, &receive("sku-1", "east", 5, "rcv-2"));
    let (a, txns) = apply(&mut s, T0 + 1, &set_policy("sku-1", Some(limit(2)), "p1"));
    assert_eq!(a.outcome, Outcome::PolicySet { present: true });
    assert_eq!(txns.len(), 1);
    assert_eq!((txns[0].kind, txns[0].warehouse_id.as_str(), txns[0].qty), (TxnKind::PolicySet, DEFAULT_WAREHOUSE, 0));
    assert_eq!(txns[0].detail, "maxPerBuyer=2");
    assert_eq!(txns[0].before, txns[0].after, "a policy moves no units");
    let view = s.stock("sku-1").unwrap().policy.unwrap();
    assert_eq!((view.policy, view.buyers), (limit(2), 0));
    // Removing it: a txn of its own; removing nothing changes nothing.
    let (a, txns) = apply(&mut s, T0 + 2, &set_policy("sku-1", None, "p2"));
    assert_eq!((a.outcome, txns[0].kind), (Outcome::PolicySet { present: false }, TxnKind::PolicyRemoved));
    assert!(s.stock("sku-1").unwrap().policy.is_none());
    let (a, _) = apply(&mut s, T0 + 3, &set_policy("sku-1", None, "p3"));
    assert!(!a.changed);
    let (a, _) = apply(&mut s, T0 + 3, &set_policy("ghost", Some(limit(1)), "p4"));
    assert_eq!(rejection(&a), Rejection::SkuNotFound);
}

#[test]
fn a_buyer_gets_exactly_the_limit_and_released_or_expired_units_come_back() {
    let mut s = stocked(100);
    apply(&mut s, T0, &set_policy("sku-1", Some(limit(3)), "p"));
    let (a, _) = apply(&mut s, T0 + 1, &reserve("o1", "sku-1", 1, "k1"));
    assert_eq!(rejection(&a), Rejection::BuyerRequired, "a plain reserve names no buyer");
    let (first, _) = apply(&mut s, T0 + 1, &reserve_as("o1", 2, "bob", "", "k2"));
    let (a, _) = apply(&mut s, T0 + 2, &reserve_as("o2", 2, "bob", "", "k3"));
    assert_eq!(rejection(&a), Rejection::PurchaseLimitExceeded { limit: 3, held: 2 });
    let (second, _) = apply(&mut s, T0 + 2, &reserve_as("o2", 1, "bob", "", "k4"));
    // Another buyer is not affected.
    apply(&mut s, T0 + 2, &reserve_as("o3", 3, "amy", "", "k5"));
    // A release gives units back; a confirm keeps them counted as bought.
    apply(&mut s, T0 + 3, &release(reserved_id(&first), "k6"));
    apply(&mut s, T0 + 3, &confirm(reserved_id(&second), "pay", "k7"));
    let (a, _) = apply(&mut s, T0 + 4, &reserve_as("o4", 3, "bob", "", "k8"));
    assert_eq!(rejection(&a), Rejection::PurchaseLimitExceeded { limit: 3, held: 1 });
    let (third, _) = apply(&mut s, T0 + 4, &reserve_as("o4", 2, "bob", "", "k9"));
    // Expiry gives them back too.
    let expired = Command::Expire(Expire { ids: vec![reserved_id(&third)] });
    apply(&mut s, T0 + 4 + TTL, &expired);
    let (a, _) = apply(&mut s, T0 + 5 + TTL, &reserve_as("o5", 2, "bob", "", "k10"));
    assert!(a.changed, "{a:?}");
    assert_eq!(s.stock("sku-1").unwrap().policy.unwrap().buyers, 2);
}

#[test]
fn a_sale_window_refuses_reserves_outside_it_by_command_time() {
    let mut s = stocked(10);
    let window = SalePolicy { sale_starts_at: Some(T0 + 100), sale_ends_at: Some(T0 + 200), ..SalePolicy::default() };
    apply(&mut s, T0, &set_policy("sku-1", Some(window), "p"));
    let (a, _) = apply(&mut s, T0 + 99, &reserve("o1", "sku-1", 1, "k1"));
    assert_eq!(rejection(&a), Rejection::SaleNotStarted { starts_at: T0 + 100 });
    let (a, _) = apply(&mut s, T0 + 100, &reserve("o1", "sku-1", 1, "k2"));
    assert!(a.changed);
    let (a, _) = apply(&mut s, T0 + 200, &reserve("o2", "sku-1", 1, "k3"));
    assert_eq!(rejection(&a), Rejection::SaleEnded);
}

#[test]
fn channel_quotas_refuse_a_used_up_channel_while_others_sell_and_can_change_mid_sale() {
    let mut s = stocked(100);
    let quotas = |app, web| SalePolicy {
        channel_quotas: vec![("app".to_string(), app), ("web".to_string(), web)],
        ..SalePolicy::default()
    };
    apply(&mut s, T0, &set_policy("sku-1", Some(quotas(3, 2)), "p1"));
    let (a, _) = apply(&mut s, T0 + 1, &reserve("o1", "sku-1", 1, "k1"));
    assert_eq!(rejection(&a), Rejection::ChannelRequired);
    let (a, _) = apply(&mut s, T0 + 1, &reserve_as("o1", 1, "", "tv", "k2"));
    assert_eq!(rejection(&a), Rejection::UnknownChannel);
    let (app, _) = apply(&mut s, T0 + 1, &reserve_as("o1", 3, "", "app", "k3"));
    let (a, _) = apply(&mut s, T0 + 2, &reserve_as("o2", 1, "", "app", "k4"));
    assert_eq!(rejection(&a), Rejection::ChannelQuotaExhausted { quota: 3, used: 3 });
    let (a, _) = apply(&mut s, T0 + 2, &reserve_as("o3", 2, "", "web", "k5"));
    assert!(a.changed, "web still sells");
    // Raising the app quota mid-sale keeps what was counted.
    apply(&mut s, T0 + 3, &set_policy("sku-1", Some(quotas(5, 2)), "p2"));
    let view = s.stock("sku-1").unwrap().policy.unwrap();
    assert_eq!(view.channels_used, vec![("app".to_string(), 3), ("web".to_string(), 2)]);
    let (a, _) = apply(&mut s, T0 + 3, &reserve_as("o4", 3, "", "app", "k6"));
    assert_eq!(rejection(&a), Rejection::ChannelQuotaExhausted { quota: 5, used: 3 });
    apply(&mut s, T0 + 3, &reserve_as("o4", 2, "", "app", "k7"));
    // A release returns units to its channel.
    apply(&mut s, T0 + 4, &release(reserved_id(&app), "k8"));
    let (a, _) = apply(&mut s, T0 + 4, &reserve_as("o5", 3, "", "app", "k9"));
    assert!(a.changed);
}

#[test]
fn a_policy_removed_and_set_again_counts_afresh() {
    let mut s = stocked(100);
    apply(&mut s, T0, &set_policy("sku-1", Some(limit(2)), "p1"));
    let (held, _) = apply(&mut s, T0 + 1, &reserve_as("o1", 2, "bob", "", "k1"));
    apply(&mut s, T0 + 2, &set_policy("sku-1", None, "p2"));
    apply(&mut s, T0 + 3, &set_policy("sku-1", Some(limit(2)), "p3"));
    let (fresh, _) = apply(&mut s, T0 + 4, &reserve_as("o2", 2, "bob", "", "k2"));
    assert!(fresh.changed, "the new policy never counted the first hold");
    // Releasing the hold the old policy counted gives nothing back to the new one.
    apply(&mut s, T0 + 5, &release(reserved_id(&held), "k3"));
    let (a, _) = apply(&mut s, T0 + 6, &reserve_as("o3", 1, "bob", "", "k4"));
    assert_eq!(rejection(&a), Rejection::PurchaseLimitExceeded { limit: 2, held: 2 });
    // Lowering the limit mid-sale refuses more, and keeps what is held.
    apply(&mut s, T0 + 7, &set_policy("sku-1", Some(limit(1)), "p4"));
    let (a, _) = apply(&mut s, T0 + 8, &reserve_as("o3", 1, "amy", "", "k5"));
    assert!(a.changed);
    let (a, _) = apply(&mut s, T0 + 8, &reserve_as("o4", 1, "amy", "", "k6"));
    assert_eq!(rejection(&a), Rejection::PurchaseLimitExceeded { limit: 1, held: 1 });
}

#[test]
fn sale_state_survives_an_image_round_trip_and_a_rollback() {
    let mut s = stocked(100);
    apply(&mut s, T0, &set_policy("sku-1", Some(limit(2)), "p1"));
    apply(&mut s, T0 + 1, &reserve_as("o1", 2, "bob", "", "k1"));
    let restored = Shard::from_image(s.config().clone(), s.image());
    restored.check_invariants().unwrap();
    assert_eq!(restored.dump(), s.dump());
    let before = s.dump();
    s.begin_batch();
    let mut txns = Vec::new();
    s.apply(T0 + 2, &reserve_as("o2", 1, "amy", "", "k2"), &mut txns);
    s.apply(T0 + 2, &set_policy("sku-1", None, "p2"), &mut txns);
    s.rollback_batch();
    s.check_invariants().unwrap();
    assert_eq!(s.dump(), before);
}

// ----- orders ------------------------------------------------------------------

fn line(sku: &str, qty: u64) -> OrderLine {
    OrderLine { sku_id: sku.into(), warehouse_id: DEFAULT_WAREHOUSE.into(), qty }
}

fn prepare(order: &str, lines: Vec<OrderLine>, shards: Vec<u16>, key: &str) -> Command {
    Command::PrepareOrder(Box::new(PrepareOrder {
        order_id: order.into(),
        lines,
        buyer_id: String::new(),
        channel: String::new(),
        expire_at: T0 + TTL,
        shards,
        idem_key: key.into(),
    }))
}

fn decide_order(order: &str, decision: OrderDecision, shards: Vec<u16>) -> Command {
    Command::DecideOrder(Box::new(DecideOrder { order_id: order.into(), decision, shards, expire_at: T0 + TTL }))
}

fn finish_order(order: &str, state: OrderState, detail: &str) -> Command {
    Command::FinishOrder(Box::new(FinishOrder { order_id: order.into(), state, detail: detail.into() }))
}

/// Applies a command that may change state without txns (orders).
fn step(s: &mut Shard, at: Millis, c: &Command) -> (Applied, Vec<Txn>) {
    let mut txns = Vec::new();
    let applied = s.apply(at, c, &mut txns);
    s.check_invariants().unwrap();
    (applied, txns)
}

fn three_skus(s: &mut Shard) {
    for (sku, qty) in [("a", 5), ("b", 5), ("c", 1)] {
        step(s, T0, &receive(sku, DEFAULT_WAREHOUSE, qty, &format!("rcv-{sku}")));
    }
}

#[test]
fn an_order_of_one_shard_is_held_whole_or_not_at_all() {
    let mut s = shard();
    three_skus(&mut s);
    // The third line is short: nothing is held, and every failing line is named.
    let order = prepare("o1", vec![line("a", 2), line("c", 2), line("ghost", 1)], vec![3], "k1");
    let (a, txns) = step(&mut s, T0 + 1, &order);
    assert_eq!(a.outcome, Outcome::Rejected(Rejection::OrderNotReservable { failed: 2 }));
    assert!(txns.is_empty() && !a.changed);
    assert_eq!(
        s.take_refusals(),
        vec![(1, Rejection::InsufficientStock { available: 1 }), (2, Rejection::SkuNotFound)]
    );
    assert_eq!((levels(&s, "a"), levels(&s, "c")), (lv(5, 0, 0), lv(1, 0, 0)));
    // All lines available: held at once, committed by the same command.
    let order = prepare("o1", vec![line("a", 2), line("b", 3)], vec![3], "k2");
    let (a, txns) = step(&mut s, T0 + 2, &order);
    let Outcome::OrderPrepared { first, lines: 2, expire_at } = a.outcome else { panic!("{a:?}") };
    assert_eq!((first.seq(), expire_at, txns.len()), (1, T0 + TTL, 2));
    assert_eq!(s.order_record("o1").unwrap().state, OrderState::Committed);
    // A retry with the same key is the same answer.
    assert_eq!(step(&mut s, T0 + 3, &order).0.outcome, a.outcome);
    // A line cannot be confirmed or released on its own.
    let (a, _) = step(&mut s, T0 + 3, &confirm(first, "pay", "k3"));
    assert_eq!(a.outcome, Outcome::Rejected(Rejection::PartOfOrder));
    let (a, _) = step(&mut s, T0 + 3, &release(first, "k4"));
    assert_eq!(a.outcome, Outcome::Rejected(Rejection::PartOfOrder));
    // Confirmed together.
    let (a, txns) =
        step(&mut s, T0 + 4, &decide_order("o1", OrderDecision::Confirm { payment_id: "pay".into() }, vec![3]));
    assert_eq!((a.outcome, txns.len()), (Outcome::OrderDecided { state: OrderState::Confirmed }, 2));
    assert_eq!((levels(&s, "a"), levels(&s, "b")), (lv(3, 0, 2), lv(2, 0, 3)));
    let again = step(&mut s, T0 + 5, &decide_order("o1", OrderDecision::Confirm { payment_id: "pay".into() }, vec![3]));
    assert!(!again.0.changed, "a repeated payment callback changes nothing");
    let other = step(&mut s, T0 + 5, &decide_order("o1", OrderDecision::Confirm { payment_id: "p2".into() }, vec![3]));
    assert_eq!(other.0.outcome, Outcome::Rejected(Rejection::PaymentMismatch));
}

#[test]
fn an_order_expires_whole_from_its_homes_timer_and_never_line_by_line() {
    let mut s = shard();
    three_skus(&mut s);
    step(&mut s, T0, &prepare("o1", vec![line("a", 1), line("b", 1)], vec![3], "k1"));
    assert!(s.due_expirations(T0 + TTL, 10).is_empty(), "order lines are not in the holds' expiry queue");
    assert_eq!(s.due_order_expirations(T0 + TTL - 1, 10), Vec::<String>::new());
    let due = s.due_order_expirations(T0 + TTL, 10);
    assert_eq!(due, vec!["o1".to_string()]);
    let (a, txns) = step(&mut s, T0 + TTL, &Command::ExpireOrders(ExpireOrders { order_ids: due }));
    assert_eq!((a.outcome, txns.len()), (Outcome::OrdersExpired { count: 1 }, 2));
    assert_eq!((levels(&s, "a"), levels(&s, "b")), (lv(5, 0, 0), lv(5, 0, 0)));
    assert!(txns.iter().all(|t| t.detail == REASON_TIMEOUT));
    // A late confirm finds it expired.
    let (a, _) =
        step(&mut s, T0 + TTL + 1, &decide_order("o1", OrderDecision::Confirm { payment_id: "p".into() }, vec![3]));
    assert_eq!(a.outcome, Outcome::Rejected(Rejection::ReservationExpired));
}

#[test]
fn an_order_over_two_shards_is_tentative_until_its_home_decides() {
    // Shard 0 is the home; shard 1 holds the other line.
    let (mut home, mut other) = (Shard::new(ShardConfig::new(0)), Shard::new(ShardConfig::new(1)));
    step(&mut home, T0, &receive("a", DEFAULT_WAREHOUSE, 5, "r1"));
    step(&mut other, T0, &receive("b", DEFAULT_WAREHOUSE, 5, "r2"));
    let (a, _) = step(&mut home, T0 + 1, &prepare("o1", vec![line("a", 2)], vec![0, 1], "k#0"));
    assert!(matches!(a.outcome, Outcome::OrderPrepared { .. }));
    step(&mut other, T0 + 1, &prepare("o1", vec![line("b", 3)], vec![0, 1], "k#1"));
    // Tentative lines count as reserved: nobody else can take them.
    assert_eq!((levels(&home, "a"), levels(&other, "b")), (lv(3, 2, 0), lv(2, 3, 0)));
    assert!(home.order_record("o1").is_none(), "no decision yet");
    let unsettled = other.unsettled_order_lines(T0 + 2, T0 + 2, false);
    assert_eq!((unsettled.len(), unsettled[0].home, unsettled[0].tentative), (1, 0, true));
    // The home commits; its own line follows in the same command, with no txn.
    let (a, txns) = step(&mut home, T0 + 3, &decide_order("o1", OrderDecision::Commit, vec![0, 1]));
    assert_eq!((a.outcome, a.changed, txns.len()), (Outcome::OrderDecided { state: OrderState::Committed }, true, 0));
    // A late abort (the resolver's) is answered with the decision.
    let (a, _) = step(&mut home, T0 + 4, &decide_order("o1", OrderDecision::Abort, vec![0, 1]));
    assert_eq!((a.outcome, a.changed), (Outcome::OrderDecided { state: OrderState::Committed }, false));
    let (a, _) = step(&mut other, T0 + 4, &finish_order("o1", OrderState::Committed, ""));
    assert_eq!((a.outcome, a.changed), (Outcome::OrderFinished { lines: 1 }, true));
    assert!(other.unsettled_order_lines(T0 + 5, T0 + 5, false).is_empty());
    // Released: the home decides, the other shard follows.
    let release = decide_order("o1", OrderDecision::Release { reason: "CANCELLED".into() }, vec![0, 1]);
    let (a, txns) = step(&mut home, T0 + 6, &release);
    assert_eq!((a.outcome, txns.len()), (Outcome::OrderDecided { state: OrderState::Released }, 1));
    let (_, txns) = step(&mut other, T0 + 6, &finish_order("o1", OrderState::Released, "CANCELLED"));
    assert_eq!((txns.len(), txns[0].detail.as_str()), (1, "CANCELLED"));
    assert_eq!((levels(&home, "a"), levels(&other, "b")), (lv(5, 0, 0), lv(5, 0, 0)));
}

#[test]
fn an_aborted_order_returns_its_tentative_lines_and_a_late_commit_cannot_revive_it() {
    let (mut home, mut other) = (Shard::new(ShardConfig::new(0)), Shard::new(ShardConfig::new(1)));
    step(&mut home, T0, &receive("a", DEFAULT_WAREHOUSE, 5, "r1"));
    step(&mut other, T0, &receive("b", DEFAULT_WAREHOUSE, 5, "r2"));
    step(&mut other, T0 + 1, &prepare("o1", vec![line("b", 3)], vec![0, 1], "k#1"));
    // The home never prepared (say, its line was short): the order aborts.
    let (a, _) = step(&mut home, T0 + 2, &decide_order("o1", OrderDecision::Abort, vec![0, 1]));
    assert_eq!(a.outcome, Outcome::OrderDecided { state: OrderState::Aborted });
    let (a, _) = step(&mut home, T0 + 3, &decide_order("o1", OrderDecision::Commit, vec![0, 1]));
    assert_eq!(a.outcome, Outcome::OrderDecided { state: OrderState::Aborted }, "first decision wins");
    let (_, txns) = step(&mut other, T0 + 3, &finish_order("o1", OrderState::Aborted, ""));
    assert_eq!((txns.len(), txns[0].detail.as_str()), (1, REASON_ORDER_ABORTED));
    assert_eq!(levels(&other, "b"), lv(5, 0, 0), "an aborted hold is never sold");
    let (a, _) =
        step(&mut home, T0 + 4, &decide_order("o1", OrderDecision::Confirm { payment_id: "p".into() }, vec![0, 1]));
    assert_eq!(a.outcome, Outcome::Rejected(Rejection::OrderAborted));
}

#[test]
fn order_state_survives_an_image_round_trip_and_a_rollback() {
    let mut s = shard();
    three_skus(&mut s);
    step(&mut s, T0, &prepare("o1", vec![line("a", 1)], vec![3], "k1"));
    step(&mut s, T0, &prepare("o2", vec![line("b", 1)], vec![1, 3], "k2"));
    let restored = Shard::from_image(s.config().clone(), s.image());
    restored.check_invariants().unwrap();
    assert_eq!(restored.dump(), s.dump());
    assert_eq!(restored.order_record("o1"), s.order_record("o1"));
    let before = s.dump();
    s.begin_batch();
    let mut txns = Vec::new();
    s.apply(T0 + 1, &decide_order("o1", OrderDecision::Release { reason: "x".into() }, vec![3]), &mut txns);
    s.apply(T0 + 1, &finish_order("o2", OrderState::Committed, ""), &mut txns);
    s.apply(T0 + 1, &prepare("o3", vec![line("a", 1), line("b", 1)], vec![3], "k3"), &mut txns);
    s.rollback_batch();
    s.check_invariants().unwrap();
    assert_eq!(s.dump(), before);
    assert_eq!(s.order_record("o1").unwrap().state, OrderState::Committed);
}
