//! Sale policies on a shard: setting and removing them, the checks a
//! reserve of a policed SKU passes, and the counts of units per buyer and
//! per channel that those checks read.
//!
//! A hold counted by a policy carries a [`Tag`] while it is `RESERVED`:
//! which policy counted it (by generation, so a policy removed and set
//! again does not take back units it never counted), its buyer and its
//! channel. Releasing or expiring the hold gives the units back; confirming
//! it drops the tag and leaves them counted as bought.

use rustc_hash::FxHashMap;

use super::{Outcome, Rejection, Shard, Undo};
use crate::command::SetPolicy;
use crate::ids::Millis;
use crate::sale::{PolicyView, SalePolicy};
use crate::state::{ReservationStatus, Txn, TxnKind};

/// The policy of one SKU and what it has counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SkuSale {
    pub(super) policy: SalePolicy,
    /// Set when the policy was first set; kept while it is only changed.
    pub(super) generation: u64,
    /// Units held or sold per channel, by name (sorted). Kept when the
    /// quotas change, so that a changed quota applies to what was sold.
    pub(super) channels: Vec<(String, u64)>,
    /// Units held or sold per buyer (by [`buyer_hash`]), while a
    /// limit is set; a buyer whose units all came back has no entry.
    pub(super) buyers: FxHashMap<u64, u32>,
}

/// What a policy counted for one `RESERVED` hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Tag {
    /// The SKU's first row.
    pub(super) first: u32,
    pub(super) generation: u64,
    pub(super) buyer: Option<u64>,
    pub(super) channel: Option<Box<str>>,
}

/// Sale policies of the shard's SKUs, by the SKU's first row.
#[derive(Clone, Debug)]
pub(super) struct Sales {
    pub(super) skus: FxHashMap<u32, SkuSale>,
    /// Tags of `RESERVED` holds, by hold sequence.
    pub(super) tags: FxHashMap<u64, Tag>,
    pub(super) next_generation: u64,
}

impl Default for Sales {
    fn default() -> Sales {
        Sales { skus: FxHashMap::default(), tags: FxHashMap::default(), next_generation: 1 }
    }
}

/// One step of the undo log for sale state.
pub(super) enum SaleUndo {
    /// A policy was set on an SKU that had none.
    Created {
        first: u32,
    },
    /// A policy's terms changed.
    Changed {
        first: u32,
        prev: Box<SalePolicy>,
    },
    /// A policy was removed, with everything it counted.
    Removed {
        first: u32,
        prev: Box<SkuSale>,
    },
    Buyer {
        first: u32,
        buyer: u64,
        prev: u32,
    },
    Channel {
        first: u32,
        channel: Box<str>,
        prev: u64,
    },
    Tag {
        seq: u64,
        prev: Option<Tag>,
    },
}

/// Who a reserve is for: empty strings where the request named none.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Buyer<'a> {
    pub(super) buyer_id: &'a str,
    pub(super) channel: &'a str,
}

/// What a reserve that passed its SKU's policy counts once it holds.
pub(super) struct Admitted {
    first: u32,
    generation: u64,
    buyer: Option<u64>,
    channel: Option<Box<str>>,
}

/// A policy's snapshot form (see [`crate::SaleImage`]).
impl SkuSale {
    fn view(&self) -> PolicyView {
        PolicyView {
            policy: self.policy.clone(),
            channels_used: self.channels.clone(),
            buyers: self.buyers.len() as u64,
        }
    }
}

impl Sales {
    pub(super) fn policy(&self, first: u32) -> Option<PolicyView> {
        if self.skus.is_empty() {
            return None;
        }
        self.skus.get(&first).map(SkuSale::view)
    }

    pub(super) fn undo(&mut self, step: SaleUndo) {
        match step {
            SaleUndo::Created { first } => {
                self.skus.remove(&first);
                self.next_generation -= 1;
            }
            SaleUndo::Changed { first, prev } => {
                self.skus.get_mut(&first).expect("undo of a missing policy").policy = *prev;
            }
            SaleUndo::Removed { first, prev } => {
                self.skus.insert(first, *prev);
            }
            SaleUndo::Buyer { first, buyer, prev } => {
                let buyers = &mut self.skus.get_mut(&first).expect("undo of a missing policy").buyers;
                if prev == 0 {
                    buyers.remove(&buyer);
                } else {
                    buyers.insert(buyer, prev);
                }
            }
            SaleUndo::Channel { first, channel, prev } => {
                let sale = self.skus.get_mut(&first).expect("undo of a missing policy");
                set_channel(&mut sale.channels, &channel, prev);
            }
            SaleUndo::Tag { seq, prev } => match prev {
                Some(tag) => {
                    self.tags.insert(seq, tag);
                }
                None => {
                    self.tags.remove(&seq);
                }
            },
        }
    }
}

/// The key of a buyer's count: 64 bits of XXH3. Two buyers whose ids
/// collide (about one pair in 10^8 among a million buyers) share one limit:
/// a refusal too many, never a unit too many.
pub(super) fn buyer_hash(buyer_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(buyer_id.as_bytes())
}

fn channel_used(channels: &[(String, u64)], channel: &str) -> u64 {
    channels.iter().find(|(c, _)| c == channel).map_or(0, |&(_, u)| u)
}

/// Sets a channel's count (0 removes it), keeping the list sorted.
fn set_channel(channels: &mut Vec<(String, u64)>, channel: &str, used: u64) {
    match channels.binary_search_by(|(c, _)| c.as_str().cmp(channel)) {
        Ok(i) if used == 0 => {
            channels.remove(i);
        }
        Ok(i) => channels[i].1 = used,
        Err(_) if used == 0 => {}
        Err(i) => channels.insert(i, (channel.to_string(), used)),
    }
}

impl Shard {
    fn record_sale(&mut self, step: SaleUndo) {
        self.record(Undo::Sale(step));
    }

    pub(super) fn set_policy(&mut self, at: Millis, c: &SetPolicy, txns: &mut Vec<Txn>) -> (Outcome, bool) {
        let Some(first) = self.table.find_sku(&c.sku_id) else {
            return (Outcome::Rejected(Rejection::SkuNotFound), false);
        };
        let (kind, reason) = match &c.policy {
            Some(policy) => {
                match self.sales.skus.get_mut(&first) {
                    Some(sale) => {
                        let prev = std::mem::replace(&mut sale.policy, policy.clone());
                        if policy.max_per_buyer.is_none() && prev.max_per_buyer.is_some() {
                            // Nothing counts buyers any more: the counts
                            // go, and so do the buyers of the live holds,
                            // so that a limit set again counts afresh.
                            let buyers = std::mem::take(&mut sale.buyers);
                            self.record_sale(SaleUndo::Changed { first, prev: Box::new(prev) });
                            for (buyer, units) in buyers {
                                self.record_sale(SaleUndo::Buyer { first, buyer, prev: units });
                            }
                            let mut counted: Vec<u64> = self
                                .sales
                                .tags
                                .iter()
                                .filter(|(_, t)| t.first == first && t.buyer.is_some())
                                .map(|(&seq, _)| seq)
                                .collect();
                            counted.sort_unstable();
                            for seq in counted {
                                let tag = self.sales.tags.get_mut(&seq).expect("listed");
                                let prev = Some(tag.clone());
                                tag.buyer = None;
                                self.record_sale(SaleUndo::Tag { seq, prev });
                            }
                        } else {
                            self.record_sale(SaleUndo::Changed { first, prev: Box::new(prev) });
                        }
                    }
                    None => {
                        let generation = self.sales.next_generation;
                        self.sales.next_generation += 1;
                        let sale = SkuSale {
                            policy: policy.clone(),
                            generation,
                            channels: Vec::new(),
                            buyers: FxHashMap::default(),
                        };
                        self.sales.skus.insert(first, sale);
                        self.record_sale(SaleUndo::Created { first });
                    }
                }
                (TxnKind::PolicySet, policy.describe())
            }
            None => match self.sales.skus.remove(&first) {
                Some(prev) => {
                    self.record_sale(SaleUndo::Removed { first, prev: Box::new(prev) });
                    (TxnKind::PolicyRemoved, String::new())
                }
                None => return (Outcome::PolicySet { present: false }, false),
            },
        };
        let txn = self.operator_txn(at, kind, first, 0, c.idem_key.clone(), String::new(), &reason, &|_| {});
        txns.push(txn);
        (Outcome::PolicySet { present: c.policy.is_some() }, true)
    }

    /// Checks a reserve of `qty` units of the SKU whose first row is
    /// `first` against its policy, at `at`. `Ok(None)`: the SKU has no
    /// policy.
    pub(super) fn admit(
        &self,
        at: Millis,
        first: u32,
        qty: u64,
        who: Buyer<'_>,
    ) -> Result<Option<Admitted>, Rejection> {
        if self.sales.skus.is_empty() {
            return Ok(None);
        }
        let Some(sale) = self.sales.skus.get(&first) else { return Ok(None) };
        let policy = &sale.policy;
        if let Some(starts_at) = policy.sale_starts_at {
            if at < starts_at {
                return Err(Rejection::SaleNotStarted { starts_at });
            }
        }
        if policy.sale_ends_at.is_some_and(|ends_at| at >= ends_at) {
            return Err(Rejection::SaleEnded);
        }
        let channel = if policy.channel_quotas.is_empty() {
            None
        } else if who.channel.is_empty() {
            return Err(Rejection::ChannelRequired);
        } else {
            let Some(quota) = policy.quota(who.channel) else { return Err(Rejection::UnknownChannel) };
            let used = channel_used(&sale.channels, who.channel);
            if used.saturating_add(qty) > quota {
                return Err(Rejection::ChannelQuotaExhausted { quota, used });
            }
            Some(who.channel.into())
        };
        let buyer = match policy.max_per_buyer {
            None => None,
            Some(_) if who.buyer_id.is_empty() => return Err(Rejection::BuyerRequired),
            Some(limit) => {
                let buyer = buyer_hash(who.buyer_id);
                let held = sale.buyers.get(&buyer).copied().unwrap_or(0);
                if held as u64 + qty > limit as u64 {
                    return Err(Rejection::PurchaseLimitExceeded { limit, held });
                }
                Some(buyer)
            }
        };
        Ok(Some(Admitted { first, generation: sale.generation, buyer, channel }))
    }

    /// Counts a new hold's units against its SKU's policy.
    pub(super) fn count_hold(&mut self, seq: u64, qty: u32, admitted: Admitted) {
        let Admitted { first, generation, buyer, channel } = admitted;
        let sale = self.sales.skus.get_mut(&first).expect("admitted by this policy");
        let mut steps = Vec::with_capacity(3);
        if let Some(buyer) = buyer {
            let units = sale.buyers.entry(buyer).or_insert(0);
            steps.push(SaleUndo::Buyer { first, buyer, prev: *units });
            *units += qty;
        }
        if let Some(channel) = &channel {
            let used = channel_used(&sale.channels, channel);
            set_channel(&mut sale.channels, channel, used + qty as u64);
            steps.push(SaleUndo::Channel { first, channel: channel.clone(), prev: used });
        }
        let prev = self.sales.tags.insert(seq, Tag { first, generation, buyer, channel });
        steps.push(SaleUndo::Tag { seq, prev });
        for step in steps {
            self.record_sale(step);
        }
    }

    /// A counted hold left `RESERVED` with `status`: a sale keeps its units
    /// counted; a release or expiry gives them back to the buyer and the
    /// channel, if the policy that counted them is still in force.
    pub(super) fn uncount_hold(&mut self, seq: u64, qty: u32, status: ReservationStatus) {
        if self.sales.tags.is_empty() {
            return;
        }
        let Some(tag) = self.sales.tags.remove(&seq) else { return };
        let (first, buyer, channel) = (tag.first, tag.buyer, tag.channel.clone());
        let generation = tag.generation;
        self.record_sale(SaleUndo::Tag { seq, prev: Some(tag) });
        if status == ReservationStatus::Confirmed {
            return;
        }
        let Some(sale) = self.sales.skus.get_mut(&first).filter(|s| s.generation == generation) else { return };
        let mut steps = Vec::with_capacity(2);
        if let Some(buyer) = buyer {
            if let Some(units) = sale.buyers.get_mut(&buyer) {
                steps.push(SaleUndo::Buyer { first, buyer, prev: *units });
                *units = units.saturating_sub(qty);
                if *units == 0 {
                    sale.buyers.remove(&buyer);
                }
            }
        }
        if let Some(channel) = channel {
            let used = channel_used(&sale.channels, &channel);
            set_channel(&mut sale.channels, &channel, used.saturating_sub(qty as u64));
            steps.push(SaleUndo::Channel { first, channel, prev: used });
        }
        for step in steps {
            self.record_sale(step);
        }
    }

    /// The sale state as snapshots store it.
    pub(super) fn sale_image(&self) -> crate::SaleImage {
        let mut skus: Vec<crate::image::SkuSaleImage> = self
            .sales
            .skus
            .iter()
            .map(|(&first, s)| {
                let mut buyers: Vec<(u64, u32)> = s.buyers.iter().map(|(&b, &u)| (b, u)).collect();
                buyers.sort_unstable();
                crate::image::SkuSaleImage {
                    first,
                    policy: s.policy.clone(),
                    generation: s.generation,
                    channels: s.channels.clone(),
                    buyers,
                }
            })
            .collect();
        skus.sort_unstable_by_key(|s| s.first);
        let mut tags: Vec<crate::image::TagImage> = self
            .sales
            .tags
            .iter()
            .map(|(&seq, t)| crate::image::TagImage {
                seq,
                first: t.first,
                generation: t.generation,
                buyer: t.buyer,
                channel: t.channel.as_deref().map(str::to_string),
            })
            .collect();
        tags.sort_unstable_by_key(|t| t.seq);
        let (orders, order_lines) = self.order_image();
        crate::SaleImage { skus, tags, next_generation: self.sales.next_generation, orders, order_lines }
    }

    pub(super) fn load_sales(image: crate::SaleImage) -> Sales {
        Sales {
            skus: image
                .skus
                .into_iter()
                .map(|s| {
                    let sale = SkuSale {
                        policy: s.policy,
                        generation: s.generation,
                        channels: s.channels,
                        buyers: s.buyers.into_iter().collect(),
                    };
                    (s.first, sale)
                })
                .collect(),
            tags: image
                .tags
                .into_iter()
                .map(|t| {
                    let tag = Tag {
                        first: t.first,
                        generation: t.generation,
                        buyer: t.buyer,
                        channel: t.channel.map(Into::into),
                    };
                    (t.seq, tag)
                })
                .collect(),
            next_generation: image.next_generation.max(1),
        }
    }

    /// Sale state invariants: every tag is of a `RESERVED` hold of its
    /// SKU, and no count is zero.
    pub(super) fn check_sales(&self) -> Result<(), String> {
        for (seq, tag) in &self.sales.tags {
            let Some(hold) = self.holds.get(seq) else { return Err(format!("tag of missing hold {seq}")) };
            if hold.change.status != ReservationStatus::Reserved {
                return Err(format!("tag of finished hold {seq}"));
            }
            if !self.table.same_sku(hold.row, tag.first) {
                return Err(format!("tag of hold {seq} names another SKU"));
            }
        }
        for (first, sale) in &self.sales.skus {
            if sale.buyers.values().any(|&u| u == 0) || sale.channels.iter().any(|&(_, u)| u == 0) {
                return Err(format!("policy of row {first} keeps a zero count"));
            }
            if sale.policy.max_per_buyer.is_none() && !sale.buyers.is_empty() {
                return Err(format!("policy of row {first} counts buyers without a limit"));
            }
            if sale.generation >= self.sales.next_generation {
                return Err(format!("policy of row {first} has generation {} from the future", sale.generation));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memory of the per-buyer counts on one hot SKU: the table's
    /// slots (key, count and a control byte each) after a million buyers.
    #[test]
    fn a_million_buyers_on_one_sku_cost_under_40_bytes_each() {
        let mut buyers: FxHashMap<u64, u32> = FxHashMap::default();
        for b in 0..1_000_000u64 {
            buyers.insert(buyer_hash(&format!("buyer-{b}")), 2);
        }
        assert_eq!(buyers.len(), 1_000_000, "no two of these ids collide");
        let slots = (buyers.capacity() * 8).div_ceil(7).next_power_of_two();
        let bytes = slots * (std::mem::size_of::<(u64, u32)>() + 1);
        let per_buyer = bytes as f64 / buyers.len() as f64;
        eprintln!("1M buyers: {slots} slots, {bytes} bytes, {per_buyer:.1} bytes a buyer");
        assert!(per_buyer < 40.0, "{per_buyer} bytes a buyer");
    }
}
