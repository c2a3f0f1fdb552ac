//! Folding the audit records of refused sign-ins. A sign-in refused by the lock-out
//! (`throttle.rs`) needs no credentials (the login form's cookie is anyone's), so recording each
//! one let an outsider add a row to the audit trail per request, under a name of their choosing.
//! Instead the first refusal of an action from an address is recorded, the next ones within
//! [`FOLD_SECS`] only counted, and the next record after that says how many it stands for. The
//! failures that lead to a lock-out are not folded (each is a row in `login_failures` anyway,
//! and they stop once the lock-out begins). Per instance, in memory: two instances record up to
//! one each a minute. Pure but for the caller's clock.

use std::collections::HashMap;

/// At most one record a minute per action and address.
pub const FOLD_SECS: i64 = 60;

/// Most (action, address) pairs remembered. Past it, pairs older than [`FOLD_SECS`] are
/// forgotten (with any count not yet recorded); if every pair is younger, a refusal from a new
/// address is recorded unfolded, so a flood from very many addresses is still recorded whole.
const MAX_PAIRS: usize = 10_000;

/// Whether to record a refusal now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// Record it, saying it stands for `folded` earlier refusals not recorded.
    Record {
        /// Refusals from this address since its last record.
        folded: u64,
    },
    /// Only counted.
    Counted,
}

/// What was recorded when, per action and address.
#[derive(Debug, Default)]
pub struct Folder {
    pairs: HashMap<(String, String), (i64, u64)>,
}

impl Folder {
    /// A refusal of `action` from `source` at `now` (Unix seconds): record it, or count it.
    pub fn note(&mut self, action: &str, source: &str, now: i64) -> Fold {
        let key = (action.to_owned(), source.to_owned());
        if let Some((recorded, folded)) = self.pairs.get_mut(&key) {
            if now.saturating_sub(*recorded) < FOLD_SECS {
                *folded = folded.saturating_add(1);
                return Fold::Counted;
            }
            let before = *folded;
            (*recorded, *folded) = (now, 0);
            return Fold::Record { folded: before };
        }
        if self.pairs.len() >= MAX_PAIRS {
            self.pairs
                .retain(|_, (recorded, _)| now.saturating_sub(*recorded) < FOLD_SECS);
        }
        if self.pairs.len() < MAX_PAIRS {
            self.pairs.insert(key, (now, 0));
        }
        Fold::Record { folded: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_record_a_minute_per_action_and_address_and_the_next_counts_the_rest() {
        let mut f = Folder::default();
        assert_eq!(f.note("locked", "a", 100), Fold::Record { folded: 0 });
        for t in 101..160 {
            assert_eq!(f.note("locked", "a", t), Fold::Counted);
        }
        // Another address, another action: their own first record.
        assert_eq!(f.note("locked", "b", 120), Fold::Record { folded: 0 });
        assert_eq!(f.note("delayed", "a", 120), Fold::Record { folded: 0 });
        assert_eq!(f.note("locked", "a", 160), Fold::Record { folded: 59 });
        assert_eq!(f.note("locked", "a", 161), Fold::Counted);
    }

    #[test]
    fn a_full_table_forgets_old_pairs_and_never_folds_a_new_address() {
        let mut f = Folder::default();
        for n in 0..MAX_PAIRS {
            assert_eq!(
                f.note("locked", &n.to_string(), 0),
                Fold::Record { folded: 0 }
            );
        }
        // Full of young pairs: a new address is recorded, unremembered, every time.
        assert_eq!(f.note("locked", "new", 1), Fold::Record { folded: 0 });
        assert_eq!(f.note("locked", "new", 2), Fold::Record { folded: 0 });
        // Once they are old they make room.
        assert_eq!(f.note("locked", "new", 100), Fold::Record { folded: 0 });
        assert_eq!(f.note("locked", "new", 101), Fold::Counted);
    }
}
