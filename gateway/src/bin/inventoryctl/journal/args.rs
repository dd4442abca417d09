//! Command-line pieces of the journal subcommands: the flags several of them
//! share, and the parsers of their argument values.

use std::path::PathBuf;

use inventory_core::ReservationId;

#[derive(clap::Args)]
pub struct Source {
    /// The service's data dir (the journal is <data-dir>/journal): a copy,
    /// or the live one of a running service.
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Jsonl,
}

/// Exactly one of `--sku` and `--order`.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// An SKU id.
    #[arg(long)]
    pub sku: Option<String>,
    /// An order id.
    #[arg(long)]
    pub order: Option<String>,
}

pub fn parse_reservation(s: &str) -> Result<ReservationId, String> {
    s.parse().map_err(|_| format!("{s:?} is not a reservation id (rsv-<shard>-<seq>)"))
}

pub fn parse_shard_seq(s: &str) -> Result<(u16, u64), String> {
    let bad = || format!("{s:?} is not SHARD:SEQ (e.g. 0:42)");
    let (shard, seq) = s.split_once(':').ok_or_else(bad)?;
    let shard = shard.trim().parse::<u16>().map_err(|_| bad())?;
    let seq = seq.trim().parse::<u64>().map_err(|_| bad())?;
    if seq == 0 {
        return Err(format!("{s:?}: sequence numbers start at 1"));
    }
    Ok((shard, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_seq_and_reservation_arguments() {
        assert_eq!(parse_shard_seq("1:42"), Ok((1, 42)));
        for bad in ["1", "1:", ":4", "a:1", "1:0", "70000:1", "1:-1"] {
            assert!(parse_shard_seq(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(parse_reservation("rsv-1-2"), Ok(ReservationId::new(1, 2)));
        assert!(parse_reservation("rsv-1").is_err());
    }
}
