//! Who is asked to decrypt a round, and when a backup is asked: scheduling only, a pure machine
//! like [`crate::round::Round`].
//!
//! The primaries ([`crate::round::Round::assignment`]: under spread decryption the round's
//! participants, each for its ciphertext ranges; otherwise the `t` lowest key-share indices, for
//! the whole aggregate) are asked when the round closes. Another hospital is asked only for a
//! decryptor that will not answer in time: one that refused or sent an invalid share, or one that
//! ran past the budget of the work it was given. A budget is [`SHARE_ALLOWANCE_MS`] plus
//! [`SHARE_SLACK`] times the ask's ciphertexts at that hospital's cost per ciphertext, the larger
//! of what it reported when it enrolled and what its last share showed. Without spread, backups go
//! in key-share order, one per missing share; spread, each ciphertext short of `t` expected shares
//! is added, as a new ask, to the first hospitals that do not hold it. So in the normal case
//! nobody computes a share that is thrown away.
//!
//! Nothing here is recorded or needed by an auditor: the primaries, which the credit policy
//! uses, follow from the enrollments and the participants alone. The costs are kept in memory:
//! each hospital reports its own when it enrolls and again whenever its task stream connects, so
//! a restarted coordinator has them back as soon as the workers reconnect, before it asks them
//! again; until then it uses [`BACKUP_DECRYPT_MS`].

use std::collections::{BTreeMap, BTreeSet};

use fedchain_protocol::decryption::{self, Ranges};

/// A decryptor's budget, beyond its fixed allowance, is this many times its expected work: room
/// for a machine that is busier than when it measured itself, without waiting for a dead one
/// much longer than a live one would take.
pub const SHARE_SLACK: u64 = 3;

/// Part of every budget that does not grow with the ciphertexts: fetching the round, checking
/// its submissions' signatures, the transfers, and a machine busy with other work. At 2 s, a
/// live primary on a loaded 2-core machine ran past it in a small round, a backup decrypted in
/// its place, and the credit policy penalised the primary for a share it was computing.
pub const SHARE_ALLOWANCE_MS: u64 = 5_000;

/// The budget of a decryptor whose cost nobody in the job has reported or shown (a worker older
/// than the cost report, or a coordinator just restarted whose workers have not reconnected):
/// no less than the allowance.
pub const BACKUP_DECRYPT_MS: u64 = 6_000;

/// Largest cost per ciphertext taken from a report, 10 s: far above any real share, so a report
/// cannot overflow a budget (budgets are capped by the share deadline anyway).
const MAX_REPORTED_US: u64 = 10_000_000;

/// What a decryption share costs each hospital of a job, per ciphertext, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShareCosts {
    reported: BTreeMap<String, u64>,
    shown: BTreeMap<String, u64>,
}

impl ShareCosts {
    /// `h` measured itself at `micros` per ciphertext (0: not measured, ignored).
    pub fn report(&mut self, h: &str, micros: u64) {
        if micros > 0 {
            self.reported
                .insert(h.to_owned(), micros.min(MAX_REPORTED_US));
        }
    }

    /// `h`'s share of `ciphertexts` arrived `took_ms` after it was asked. The allowance is taken
    /// off first, so that the fixed part of a small round does not pass for a slow machine.
    pub fn observe(&mut self, h: &str, took_ms: u64, ciphertexts: usize) {
        let per = took_ms
            .saturating_sub(SHARE_ALLOWANCE_MS)
            .saturating_mul(1000)
            / (ciphertexts.max(1) as u64);
        self.shown.insert(h.to_owned(), per.min(MAX_REPORTED_US));
    }

    /// `h`'s cost per ciphertext: the larger of its report and its last share.
    pub fn per_ciphertext_us(&self, h: &str) -> Option<u64> {
        match (self.reported.get(h), self.shown.get(h)) {
            (None, None) => None,
            (a, b) => Some((*a.unwrap_or(&0)).max(*b.unwrap_or(&0))),
        }
    }

    /// How long `h` may take for `ciphertexts` before a backup is asked in its place, at most
    /// `cap_ms`. A hospital without a cost of its own is judged at the median of the costs known
    /// in the job (the median, so that one hospital's inflated report does not set everyone's
    /// budget), and when none is known by the fixed [`BACKUP_DECRYPT_MS`].
    pub fn budget_ms(&self, h: &str, ciphertexts: usize, cap_ms: u64) -> u64 {
        let median = || {
            let names: BTreeSet<&String> = self.reported.keys().chain(self.shown.keys()).collect();
            let mut known: Vec<u64> = names
                .into_iter()
                .filter_map(|k| self.per_ciphertext_us(k))
                .collect();
            known.sort_unstable();
            known.get(known.len() / 2).copied()
        };
        let budget = match self.per_ciphertext_us(h).or_else(median) {
            Some(us) => SHARE_ALLOWANCE_MS.saturating_add(
                SHARE_SLACK
                    .saturating_mul(us)
                    .saturating_mul(ciphertexts as u64)
                    / 1000,
            ),
            None => BACKUP_DECRYPT_MS,
        };
        budget.min(cap_ms)
    }
}

/// The decryptors asked for one round's shares, with when. Kept until the next round closes, so
/// that a share arriving after its round was decrypted is still measured and counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decryptors {
    round: Option<u64>,
    ciphertexts: usize,
    asked: BTreeMap<String, Vec<Ask>>,
    refused: BTreeSet<String>,
    wasted: BTreeSet<String>,
    /// Hospitals whose failure (refused, invalid, late) a spread search already answered.
    handled: BTreeSet<String>,
}

/// What a hospital was asked for, and when. Spread, a backup's ask is a new one, disjoint from the
/// hospital's earlier asks, and goes out as a task of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// When.
    pub at: u64,
    /// The ciphertexts (empty: the whole aggregate).
    pub ranges: Ranges,
}

impl Decryptors {
    /// Round `round`, whose aggregate has `ciphertexts`, closed (or resumed after a restart) at
    /// `now`: its primaries are asked for the ciphertexts [`crate::round::Round::assignment`]
    /// gives them (no ranges: the whole aggregate).
    pub fn open(
        round: u64,
        ciphertexts: usize,
        assignment: impl IntoIterator<Item = (String, Ranges)>,
        now: u64,
    ) -> Decryptors {
        Decryptors {
            round: Some(round),
            ciphertexts,
            asked: assignment
                .into_iter()
                .map(|(h, ranges)| (h, vec![Ask { at: now, ranges }]))
                .collect(),
            ..Decryptors::default()
        }
    }

    /// What `h` was asked for, oldest first (empty if it was not asked).
    pub fn asks(&self, h: &str) -> &[Ask] {
        self.asked.get(h).map_or(&[], Vec::as_slice)
    }

    /// How many ciphertexts of `ranges` (empty: all of them) there are in this round.
    pub fn count(&self, ranges: &[[u64; 2]]) -> usize {
        decryption::covered(ranges, self.ciphertexts)
    }

    /// The round these decryptors were asked for.
    pub fn round(&self) -> Option<u64> {
        self.round
    }

    /// The ciphertexts of that round's aggregate.
    pub fn ciphertexts(&self) -> usize {
        self.ciphertexts
    }

    /// `h`, asked for this round, sent a share after it was decrypted: true the first time (the
    /// share was computed for nothing), false for a repeat or a hospital that was not asked.
    pub fn wasted(&mut self, h: &str) -> bool {
        self.asked.contains_key(h) && self.wasted.insert(h.to_owned())
    }

    /// Whether `h` was asked for a share of this round.
    pub fn is_asked(&self, h: &str) -> bool {
        self.asked.contains_key(h)
    }

    /// When `h` was asked for `ranges` (or, for a share of other ciphertexts, last asked).
    pub fn asked_at(&self, h: &str, ranges: &[[u64; 2]]) -> Option<u64> {
        let asks = self.asked.get(h)?;
        asks.iter()
            .find(|a| a.ranges == ranges)
            .or(asks.last())
            .map(|a| a.at)
    }

    /// The hospitals asked so far, by name.
    pub fn asked(&self) -> impl Iterator<Item = &str> {
        self.asked.keys().map(String::as_str)
    }

    /// `h` refused to decrypt this round: it will not answer.
    pub fn refused(&mut self, h: &str) {
        self.refused.insert(h.to_owned());
    }

    /// Asks backups, at `now`, for the decryptors that will not answer in time, so that the
    /// shares still expected on time reach `t`. `order`: every enrolled hospital by key-share
    /// index; `answered`: those whose share arrived (valid or not); `valid`: how many were
    /// valid. Returns the hospitals newly asked.
    pub fn ask_backups(
        &mut self,
        now: u64,
        order: &[String],
        answered: &BTreeSet<String>,
        valid: usize,
        t: usize,
        budget_ms: impl Fn(&str) -> u64,
    ) -> Vec<String> {
        let on_time = self
            .asked
            .iter()
            .filter(|(h, asks)| {
                !answered.contains(*h)
                    && !self.refused.contains(*h)
                    && asks
                        .last()
                        .is_some_and(|a| now < a.at.saturating_add(budget_ms(h)))
            })
            .count();
        let missing = t.saturating_sub(valid + on_time);
        let backups: Vec<String> = order
            .iter()
            .filter(|h| !self.asked.contains_key(*h) && !answered.contains(*h))
            .take(missing)
            .cloned()
            .collect();
        for h in &backups {
            self.asked.insert(
                h.clone(),
                vec![Ask {
                    at: now,
                    ranges: Vec::new(),
                }],
            );
        }
        backups
    }

    /// Whether [`Decryptors::ask_spread_backups`] may have anything to ask: a decryptor not
    /// already handled by an earlier search refused, sent an invalid share, or owes an ask past
    /// its budget. Cheap (no per-ciphertext work), so the deadline driver runs the search only
    /// then. `answered(h, ranges)`: whether a valid share of `h` covers exactly `ranges`.
    pub fn spread_may_need_backups(
        &self,
        now: u64,
        answered: impl Fn(&str, &Ranges) -> bool,
        invalid: &BTreeSet<String>,
        budget_ms: impl Fn(&str, usize) -> u64,
    ) -> bool {
        self.asked
            .iter()
            .filter(|(h, _)| !self.handled.contains(*h))
            .any(|(h, asks)| {
                self.refused.contains(h)
                    || invalid.contains(h)
                    || asks.iter().any(|a| {
                        !answered(h, &a.ranges)
                            && now >= a.at.saturating_add(budget_ms(h, self.count(&a.ranges)))
                    })
            })
    }

    /// [`Decryptors::ask_backups`] for a spread decryption, ciphertext by ciphertext: wherever
    /// the valid shares (`coverage`, per ciphertext) and the shares still expected on time fall
    /// short of `t`, the ciphertext is asked, as a new ask at `now`, of the first hospitals in
    /// `order` that can still help (not refused, no invalid share, no ask late, not already asked
    /// for it). `covered_by(h)`: the ciphertexts `h`'s valid shares cover; `budget_ms(h, n)`: how
    /// long `h` may take for `n` ciphertexts. Returns the hospitals newly asked for something.
    #[allow(clippy::too_many_arguments)]
    pub fn ask_spread_backups(
        &mut self,
        now: u64,
        order: &[String],
        coverage: &[usize],
        covered_by: impl Fn(&str) -> BTreeSet<u64>,
        invalid: &BTreeSet<String>,
        t: usize,
        budget_ms: impl Fn(&str, usize) -> u64,
    ) -> Vec<String> {
        let n = self.ciphertexts.min(coverage.len());
        let mut expected = coverage[..n].to_vec();
        let mut blocked: BTreeSet<String> = self.refused.clone();
        blocked.extend(invalid.iter().cloned());
        let mut holds: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        for (h, asks) in &self.asked {
            let done = covered_by(h);
            let mut held = BTreeSet::new();
            let mut pending = Vec::new();
            let mut late = false;
            for a in asks {
                let mine = decryption::index_set(&a.ranges, n);
                let owed: Vec<u64> = mine.difference(&done).copied().collect();
                late |= !owed.is_empty() && now >= a.at.saturating_add(budget_ms(h, mine.len()));
                pending.extend(owed);
                held.extend(mine);
            }
            if late {
                blocked.insert(h.clone()); // given nothing more, and not counted on
            } else if !blocked.contains(h) {
                for &j in &pending {
                    expected[j as usize] += 1;
                }
            }
            holds.insert(h.clone(), held);
        }
        let mut extra: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        for (j, &have) in expected.iter().enumerate() {
            let mut need = t.saturating_sub(have);
            for h in order {
                if need == 0 {
                    break;
                }
                let held = holds.get(h).is_some_and(|s| s.contains(&(j as u64)));
                if !held && !blocked.contains(h) {
                    extra.entry(h.clone()).or_default().insert(j as u64);
                    need -= 1;
                }
            }
        }
        // What was short now has been asked for (or nobody is left): these failures are answered
        // until another decryptor fails.
        self.handled.extend(blocked);
        let mut newly = Vec::new();
        for (h, more) in extra {
            self.asked.entry(h.clone()).or_default().push(Ask {
                at: now,
                ranges: decryption::ranges_of(&more),
            });
            newly.push(h);
        }
        newly
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn whole(v: &[&str]) -> Vec<(String, Ranges)> {
        v.iter().map(|s| (s.to_string(), Vec::new())).collect()
    }

    #[test]
    fn a_budget_grows_with_the_work_and_falls_back_to_the_slowest_known_cost() {
        let mut c = ShareCosts::default();
        assert_eq!(c.budget_ms("a", 100, u64::MAX), BACKUP_DECRYPT_MS);
        c.report("a", 10_000);
        // 5 s + 3 x 100 x 10 ms.
        assert_eq!(c.budget_ms("a", 100, u64::MAX), 8_000);
        assert_eq!(c.budget_ms("a", 100, 4_000), 4_000, "capped");
        // b reported nothing: judged at the median known cost.
        assert_eq!(c.budget_ms("b", 100, u64::MAX), 8_000);
        let mut m = ShareCosts::default();
        for (h, us) in [("x", 1_000), ("y", 2_000), ("z", 9_000_000)] {
            m.report(h, us);
        }
        // 5 s + 3 x 100 x 2 ms: z's inflated report does not set the others' budget.
        assert_eq!(m.budget_ms("new", 100, u64::MAX), 5_600);
        // a's share took 12 s for 100: 70 ms each once the 5 s allowance is off; that is larger
        // than its report, so it counts.
        c.observe("a", 12_000, 100);
        assert_eq!(c.per_ciphertext_us("a"), Some(70_000));
        // A fast share does not lower the budget below the report.
        c.observe("a", 1_000, 100);
        assert_eq!(c.per_ciphertext_us("a"), Some(10_000));
        // Zero is no report; a huge one is bounded.
        c.report("z", 0);
        assert_eq!(c.per_ciphertext_us("z"), None);
        c.report("z", u64::MAX);
        assert_eq!(c.budget_ms("z", usize::MAX, 60_000), 60_000);
    }

    #[test]
    fn a_backup_is_asked_only_for_a_late_or_refusing_primary_one_per_share() {
        let order = names(&["p1", "p2", "b1", "b2"]);
        let mut d = Decryptors::open(0, 10, whole(&["p1", "p2"]), 1_000);
        let budget = |h: &str| if h == "p2" { 9_000 } else { 5_000 };
        let none = BTreeSet::new();
        // On time: nobody else.
        assert!(d.ask_backups(5_999, &order, &none, 0, 2, budget).is_empty());
        // p1 is late at 6 s (asked at 1 s, 5 s budget); p2 still has time: one backup.
        assert_eq!(d.ask_backups(6_000, &order, &none, 0, 2, budget), ["b1"]);
        assert!(d.is_asked("b1") && !d.is_asked("b2"));
        assert!(d.ask_backups(6_100, &order, &none, 0, 2, budget).is_empty());
        // p2 refuses: the last hospital is asked at once.
        d.refused("p2");
        assert_eq!(d.ask_backups(6_200, &order, &none, 0, 2, budget), ["b2"]);
        assert_eq!(d.asked_at("b2", &[]), Some(6_200));
        // Nobody is left to ask.
        assert!(d
            .ask_backups(99_000, &order, &none, 0, 2, budget)
            .is_empty());
        // A late share is wasted once per asked hospital; one never asked is not counted.
        assert!(d.wasted("p1") && !d.wasted("p1"));
        assert!(!d.wasted("stranger"));
    }

    #[test]
    fn a_spread_decryptor_that_refuses_has_its_ciphertexts_asked_of_others_once() {
        let order = names(&["h1", "h2", "h3", "h4"]);
        let plan = decryption::spread(6, &names(&["h1", "h2", "h3"]), 2);
        // Blocks [0,2) [2,4) [4,6) go to (h1,h2) (h2,h3) (h3,h1).
        assert_eq!(plan[0], ("h1".to_string(), vec![[0, 2], [4, 6]]));
        let mut d = Decryptors::open(0, 6, plan, 1_000);
        let none = BTreeSet::new();
        let nothing = |_: &str| BTreeSet::new();
        let unanswered = |_: &str, _: &Ranges| false;
        let coverage = [0; 6];
        let budget = |_: &str, _: usize| 5_000;
        assert!(!d.spread_may_need_backups(2_000, unanswered, &none, budget));
        assert!(d
            .ask_spread_backups(2_000, &order, &coverage, nothing, &none, 2, budget)
            .is_empty());
        assert!(
            d.spread_may_need_backups(9_000, unanswered, &none, budget),
            "all late"
        );
        assert!(
            !d.spread_may_need_backups(9_000, |_, _| true, &none, budget),
            "late but answered"
        );
        // h3 refuses: its blocks go to the first hospitals that do not hold them, each as a new
        // ask of only those ciphertexts (its own task, nothing it is already decrypting).
        d.refused("h3");
        assert!(d.spread_may_need_backups(2_100, unanswered, &none, budget));
        assert_eq!(
            d.ask_spread_backups(2_100, &order, &coverage, nothing, &none, 2, budget),
            ["h1", "h2"]
        );
        fn ranges(d: &Decryptors, h: &str) -> Vec<Ranges> {
            d.asks(h).iter().map(|a| a.ranges.clone()).collect()
        }
        assert_eq!(ranges(&d, "h1"), [vec![[0, 2], [4, 6]], vec![[2, 4]]]);
        assert_eq!(ranges(&d, "h2"), [vec![[0, 4]], vec![[4, 6]]]);
        assert_eq!(d.asked_at("h1", &[[2, 4]]), Some(2_100));
        assert_eq!(d.asked_at("h1", &[[0, 2], [4, 6]]), Some(1_000));
        assert!(!d.is_asked("h4"));
        // Answered: nothing more to search for until another decryptor fails.
        assert!(!d.spread_may_need_backups(2_200, unanswered, &none, budget));
        assert!(d
            .ask_spread_backups(2_200, &order, &coverage, nothing, &none, 2, budget)
            .is_empty());
        // h1 answered its first ask and then went quiet past the budget of its second: what it
        // still owes goes to h4, the only one left who holds none of it.
        let covered = |h: &str| -> BTreeSet<u64> {
            if h == "h1" {
                [0, 1, 4, 5].into_iter().collect()
            } else {
                BTreeSet::new()
            }
        };
        let answered = |h: &str, r: &Ranges| h == "h1" && *r == vec![[0, 2], [4, 6]];
        let slow_h1 = |h: &str, _: usize| if h == "h1" { 1_000 } else { 60_000 };
        assert!(d.spread_may_need_backups(9_000, answered, &none, slow_h1));
        let coverage = [1, 1, 0, 0, 1, 1];
        assert_eq!(
            d.ask_spread_backups(9_000, &order, &coverage, covered, &none, 2, slow_h1),
            ["h4"]
        );
        assert_eq!(ranges(&d, "h4"), [vec![[2, 4]]]);
    }

    /// A decryptor that sends a valid share of ciphertexts it was not asked for has not answered
    /// its ask: once late, it gets a backup like any other.
    #[test]
    fn a_share_of_other_ciphertexts_does_not_answer_an_ask() {
        let ds: Vec<String> = (1..=4).map(|i| format!("h{i}")).collect();
        let mut d = Decryptors::open(0, 8, decryption::spread(8, &ds, 2), 0);
        let none = BTreeSet::new();
        let budget = |_: &str, _: usize| 5_000;
        // h1 covered as many ciphertexts as it owes, but other ones: its ask is still open.
        let answered = |h: &str, _: &Ranges| h != "h1";
        assert!(d.spread_may_need_backups(6_000, answered, &none, budget));
        // Blocks [0,2) [2,4) [4,6) [6,8) to (h1,h2) (h2,h3) (h3,h4) (h4,h1); h2 to h4 answered.
        let covered = |h: &str| -> BTreeSet<u64> {
            match h {
                "h1" | "h3" => (2..6).collect(),
                "h2" => (0..4).collect(),
                _ => (4..8).collect(),
            }
        };
        let coverage = [1, 1, 3, 3, 3, 3, 1, 1];
        let asked = d.ask_spread_backups(6_000, &ds, &coverage, covered, &none, 2, budget);
        // What h1 owes, [0,2) and [6,8), goes to the first who do not hold it.
        assert_eq!(asked, ["h2", "h3"]);
        assert_eq!(d.asks("h2")[1].ranges, vec![[6, 8]]);
        assert_eq!(d.asks("h3")[1].ranges, vec![[0, 2]]);
    }

    #[test]
    fn an_invalid_share_is_replaced_at_once_and_enough_valid_shares_ask_nobody() {
        let order = names(&["p1", "p2", "b1"]);
        let mut d = Decryptors::open(0, 10, whole(&["p1", "p2"]), 0);
        let answered: BTreeSet<String> = names(&["p1"]).into_iter().collect();
        // p1 answered with an invalid share: one valid of two is still expected.
        assert_eq!(d.ask_backups(1, &order, &answered, 0, 2, |_| 5_000), ["b1"]);
        // Both primaries valid: nothing to ask however late it is.
        let mut d = Decryptors::open(0, 10, whole(&["p1", "p2"]), 0);
        let both: BTreeSet<String> = names(&["p1", "p2"]).into_iter().collect();
        assert!(d
            .ask_backups(1_000_000, &order, &both, 2, 2, |_| 0)
            .is_empty());
    }
}
