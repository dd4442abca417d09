//! The entries of several shards' journals read as one stream in time
//! order, for `list` and `history`.

use std::io::{self, Write};

use inventory_core::{Entry, Millis};
use inventory_journal::JournalError;

use super::open::ShardJournal;
use super::CtlError;

/// Says on stderr when a shard's journal no longer holds its oldest
/// entries (truncated after a snapshot), so a listing starts later.
pub fn note_truncated(journals: &[ShardJournal]) -> Result<(), CtlError> {
    for journal in journals {
        if let Some(first) = journal.first_seq()?.filter(|first| *first > 1) {
            let _ = writeln!(
                io::stderr(),
                "inventoryctl journal: note: shard {}'s journal starts at seq {first}; \
                 seq 1..{} were truncated after a snapshot",
                journal.shard(),
                first - 1
            );
        }
    }
    Ok(())
}

type EntryIter<'a> = Box<dyn Iterator<Item = Result<Entry, JournalError>> + 'a>;

/// The entries of several shards as one stream, oldest first (ties: lower
/// shard first). Each shard's entries are in sequence order and their times
/// never go backwards, so merging the heads is enough.
pub struct Merged<'a> {
    shards: Vec<u16>,
    iters: Vec<EntryIter<'a>>,
    heads: Vec<Option<Result<Entry, JournalError>>>,
}

impl<'a> Merged<'a> {
    pub fn new(journals: &'a [ShardJournal]) -> Result<Merged<'a>, JournalError> {
        let mut merged = Merged { shards: Vec::new(), iters: Vec::new(), heads: Vec::new() };
        for journal in journals {
            let mut iter = journal.read_from(0)?;
            merged.heads.push(iter.next());
            merged.iters.push(iter);
            merged.shards.push(journal.shard());
        }
        Ok(merged)
    }
}

impl Iterator for Merged<'_> {
    type Item = Result<(u16, Entry), JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut best: Option<(usize, Millis)> = None;
        for (i, head) in self.heads.iter().enumerate() {
            match head {
                // A read error comes out first: the caller stops there.
                Some(Err(_)) => {
                    best = Some((i, 0));
                    break;
                }
                Some(Ok(entry)) if best.is_none_or(|(_, at)| entry.at < at) => best = Some((i, entry.at)),
                _ => {}
            }
        }
        let (i, _) = best?;
        let head = std::mem::replace(&mut self.heads[i], self.iters[i].next());
        head.map(|r| r.map(|entry| (self.shards[i], entry)))
    }
}
