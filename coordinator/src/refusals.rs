//! How fast one hospital's refused requests may grow the ledger.
//!
//! Every refusal is answered, and normally recorded (`RequestRejected`) so that an auditor sees
//! who tried what. Recording costs a flushed ledger write, so a hostile (or broken) hospital or
//! researcher that sends refused requests in a loop would otherwise grow the ledger and keep the
//! disk busy without bound. Each party (`hospital h1`, `researcher alice`) therefore has a bucket of [`BURST`] recorded refusals, refilled at one
//! every [`REFILL_MS`]. A refusal beyond it is still answered with its error, but only counted;
//! the count is recorded in one summary once that hospital has had no unrecorded refusal for
//! [`REFILL_MS`], or after [`SUMMARY_MAX_DELAY_MS`] of sustained excess. A hospital's refusals
//! thus add at most `BURST` records, then about 20 a minute plus a summary a minute, and the
//! ledger still says how many refusals there were.
//!
//! Pure (time is passed in), so its arithmetic is tested without a clock.

use std::collections::HashMap;

/// Refusals of one hospital recorded in a burst.
pub const BURST: u32 = 20;
/// One more refusal may be recorded per this many milliseconds.
pub const REFILL_MS: u64 = 3_000;
/// Under sustained excess, the count is still recorded at least this often.
pub const SUMMARY_MAX_DELAY_MS: u64 = 60_000;

#[derive(Debug, Clone)]
struct Bucket {
    tokens: u32,
    refilled_ms: u64,
    /// Refusals answered but not recorded since the last summary.
    unrecorded: u64,
    first_unrecorded_ms: u64,
    last_unrecorded_ms: u64,
}

impl Bucket {
    fn full(now_ms: u64) -> Bucket {
        Bucket {
            tokens: BURST,
            refilled_ms: now_ms,
            unrecorded: 0,
            first_unrecorded_ms: 0,
            last_unrecorded_ms: 0,
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let earned = now_ms.saturating_sub(self.refilled_ms) / REFILL_MS;
        if earned > 0 {
            self.tokens = (u64::from(self.tokens) + earned).min(u64::from(BURST)) as u32;
            self.refilled_ms += earned * REFILL_MS;
        }
        if self.tokens == BURST {
            self.refilled_ms = now_ms;
        }
    }
}

/// Refusals not recorded for one party, to record as one summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrecorded {
    /// The party, as its role and name (`hospital h1`).
    pub party: String,
    /// How many of its refusals were answered but not recorded.
    pub count: u64,
}

impl Unrecorded {
    /// The summary's reason text.
    pub fn reason(&self) -> String {
        format!(
            "{} more refusals of {} were answered but not recorded: more than {BURST} in a \
             burst (one more is recorded every {} s)",
            self.count,
            self.party,
            REFILL_MS / 1000
        )
    }
}

/// The buckets of every hospital that was refused.
#[derive(Debug, Default)]
pub struct RefusalMeter {
    buckets: HashMap<String, Bucket>,
}

impl RefusalMeter {
    /// Whether a refusal of `party` at `now_ms` is to be recorded; if not, it is counted for a
    /// summary. Either way the caller answers it.
    pub fn admit(&mut self, party: &str, now_ms: u64) -> Admit {
        let bucket = self
            .buckets
            .entry(party.to_owned())
            .or_insert_with(|| Bucket::full(now_ms));
        bucket.refill(now_ms);
        if bucket.tokens > 0 {
            bucket.tokens -= 1;
            return Admit::Record;
        }
        if bucket.unrecorded == 0 {
            bucket.first_unrecorded_ms = now_ms;
        }
        bucket.unrecorded += 1;
        bucket.last_unrecorded_ms = now_ms;
        if bucket.unrecorded == 1 {
            Admit::FirstUnrecorded
        } else {
            Admit::Unrecorded
        }
    }

    /// The summaries due at `now_ms` (resetting their counts): hospitals with unrecorded refusals
    /// and none for [`REFILL_MS`], or with some for [`SUMMARY_MAX_DELAY_MS`].
    pub fn due(&mut self, now_ms: u64) -> Vec<Unrecorded> {
        let mut due: Vec<Unrecorded> = self
            .buckets
            .iter_mut()
            .filter(|(_, b)| {
                b.unrecorded > 0
                    && (now_ms >= b.last_unrecorded_ms + REFILL_MS
                        || now_ms >= b.first_unrecorded_ms + SUMMARY_MAX_DELAY_MS)
            })
            .map(|(party, b)| {
                let count = std::mem::take(&mut b.unrecorded);
                Unrecorded {
                    party: party.clone(),
                    count,
                }
            })
            .collect();
        due.sort_by(|a, b| a.party.cmp(&b.party));
        due
    }
}

/// What to do with one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Record it.
    Record,
    /// Do not record it: the first one of an excess (worth a line in the operator's log).
    FirstUnrecorded,
    /// Do not record it.
    Unrecorded,
}

impl Admit {
    /// Whether the refusal is recorded.
    pub fn records(self) -> bool {
        self == Admit::Record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_recorded_then_refusals_are_counted_and_summarised() {
        let mut m = RefusalMeter::default();
        let t0 = 1_000_000;
        for i in 0..BURST {
            assert_eq!(
                m.admit("hospital h1", t0 + u64::from(i)),
                Admit::Record,
                "refusal {i}"
            );
        }
        assert_eq!(m.admit("hospital h1", t0 + 100), Admit::FirstUnrecorded);
        for _ in 0..9 {
            assert_eq!(m.admit("hospital h1", t0 + 200), Admit::Unrecorded);
        }
        // Another hospital has its own bucket.
        assert_eq!(m.admit("hospital h2", t0 + 200), Admit::Record);
        // Nothing is summarised while h1 keeps being refused...
        assert!(m.due(t0 + 200 + REFILL_MS - 1).is_empty());
        // ...and one refill interval of quiet later, the ten are.
        let due = m.due(t0 + 200 + REFILL_MS);
        assert_eq!(
            due,
            vec![Unrecorded {
                party: "hospital h1".into(),
                count: 10
            }]
        );
        assert!(due[0]
            .reason()
            .starts_with("10 more refusals of hospital h1"));
        assert!(m.due(t0 + 10 * REFILL_MS).is_empty(), "summarised once");
    }

    #[test]
    fn the_bucket_refills_one_refusal_per_interval_up_to_the_burst() {
        let mut m = RefusalMeter::default();
        let t0 = 5_000;
        for _ in 0..BURST {
            assert!(m.admit("hospital h1", t0).records());
        }
        assert!(!m.admit("hospital h1", t0 + REFILL_MS - 1).records());
        assert!(
            m.admit("hospital h1", t0 + REFILL_MS).records(),
            "one earned"
        );
        assert!(!m.admit("hospital h1", t0 + REFILL_MS).records());
        // Two intervals later: two more; a long quiet: a full burst, no more.
        assert!(m.admit("hospital h1", t0 + 3 * REFILL_MS).records());
        assert!(m.admit("hospital h1", t0 + 3 * REFILL_MS).records());
        assert!(!m.admit("hospital h1", t0 + 3 * REFILL_MS).records());
        let later = t0 + 1000 * REFILL_MS;
        for i in 0..BURST {
            assert!(m.admit("hospital h1", later).records(), "refusal {i}");
        }
        assert!(!m.admit("hospital h1", later).records());
    }

    #[test]
    fn sustained_excess_is_still_summarised_every_so_often() {
        let mut m = RefusalMeter::default();
        let t0 = 0;
        for _ in 0..BURST {
            m.admit("hospital h1", t0);
        }
        // One refused request every 100 ms for two minutes, never a quiet interval: one refill's
        // worth is recorded, the rest counted, and summaries come during the excess too.
        let mut t = t0;
        let (mut sent, mut recorded, mut summarised) = (0, 0, 0);
        let mut summaries_during = 0;
        while t < t0 + 2 * SUMMARY_MAX_DELAY_MS {
            t += 100;
            sent += 1;
            recorded += u64::from(m.admit("hospital h1", t).records());
            let due = m.due(t);
            summaries_during += due.len();
            summarised += due.iter().map(|u| u.count).sum::<u64>();
        }
        assert_eq!(recorded, 2 * SUMMARY_MAX_DELAY_MS / REFILL_MS);
        assert!(summaries_during >= 1, "a summary while the excess goes on");
        // The rest is summarised once the hospital is quiet.
        summarised += m.due(t + REFILL_MS).iter().map(|u| u.count).sum::<u64>();
        assert_eq!(
            recorded + summarised,
            sent,
            "every refusal is either recorded or counted in a summary"
        );
    }
}
