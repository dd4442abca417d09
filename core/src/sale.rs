//! Sale policies: per SKU, a purchase limit per buyer, a sale window and
//! quotas of units per sales channel, enforced by the SKU's shard inside
//! the same decision that holds the units (so they are exact under any
//! concurrency, and replay reproduces them).
//!
//! What a policy counts lives only while the policy does: units held or
//! sold per buyer (only with a limit, and only for buyers with units) and
//! per channel. Released and expired units are given back; sold units stay
//! counted for the policy's life.

use crate::ids::Millis;

/// Most channels one policy may name.
pub const CHANNELS_MAX: usize = 32;

/// What a sale policy asks of every reserve of its SKU.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SalePolicy {
    /// Units one buyer may hold and buy, together; reserves must name
    /// their buyer.
    pub max_per_buyer: Option<u32>,
    /// Reserves before this time are refused (`SALE_NOT_STARTED`).
    pub sale_starts_at: Option<Millis>,
    /// Reserves at or after this time are refused (`SALE_ENDED`).
    pub sale_ends_at: Option<Millis>,
    /// Units each channel may hold and sell, by channel name (sorted, each
    /// once). Empty: no quotas, and reserves need no channel.
    pub channel_quotas: Vec<(String, u64)>,
}

impl SalePolicy {
    /// The quota of a channel, if the policy names it.
    pub fn quota(&self, channel: &str) -> Option<u64> {
        self.channel_quotas.iter().find(|(c, _)| c == channel).map(|&(_, q)| q)
    }

    /// A one-line description, recorded as the reason of the policy's txn
    /// (and so in the audit log and the row's history).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(max) = self.max_per_buyer {
            parts.push(format!("maxPerBuyer={max}"));
        }
        if let Some(at) = self.sale_starts_at {
            parts.push(format!("saleStartsAt={at}"));
        }
        if let Some(at) = self.sale_ends_at {
            parts.push(format!("saleEndsAt={at}"));
        }
        if !self.channel_quotas.is_empty() {
            let quotas: Vec<String> = self.channel_quotas.iter().map(|(c, q)| format!("{c}:{q}")).collect();
            parts.push(format!("channelQuotas={}", quotas.join(",")));
        }
        if parts.is_empty() {
            "no limits".to_string()
        } else {
            parts.join(" ")
        }
    }
}

/// A policy as queries return it: the policy and what it has counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyView {
    pub policy: SalePolicy,
    /// Units held or sold through each channel, by channel name.
    pub channels_used: Vec<(String, u64)>,
    /// Buyers with units held or sold (counted only with a limit).
    pub buyers: u64,
}
