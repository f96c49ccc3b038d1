//! Who is asked to decrypt a round, and when a backup is asked: scheduling only, a pure machine
//! like [`crate::round::Round`].
//!
//! The `t` primaries (the lowest key-share indices, [`crate::round::Round::primaries`]) are asked
//! when the round closes. Another hospital is asked only for a decryptor that will not answer in
//! time: one that refused, or one that ran past the budget of the work it was given. A budget is
//! [`SHARE_ALLOWANCE_MS`] plus [`SHARE_SLACK`] times the round's ciphertexts at that hospital's
//! cost per ciphertext, the larger of what it reported when it enrolled and what its last share
//! showed. Backups go in key-share order, one per missing share, so in the normal case nobody
//! computes a share that is thrown away.
//!
//! Nothing here is recorded or needed by an auditor: the primaries, which the credit policy
//! uses, follow from the enrollments alone. The costs are kept in memory; after a restart the
//! coordinator uses [`BACKUP_DECRYPT_MS`] until a hospital's next share shows its cost again.

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
/// than the cost report, or a coordinator just restarted): no less than the allowance.
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
    asked: BTreeMap<String, Ask>,
    refused: BTreeSet<String>,
    wasted: BTreeSet<String>,
}

/// What a hospital was asked for, and when (last).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ask {
    at: u64,
    /// The ciphertexts (empty: the whole aggregate).
    ranges: Ranges,
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
                .map(|(h, ranges)| (h, Ask { at: now, ranges }))
                .collect(),
            ..Decryptors::default()
        }
    }

    /// The ciphertexts `h` was asked for (empty: all of them), if it was asked.
    pub fn ranges(&self, h: &str) -> Option<&Ranges> {
        self.asked.get(h).map(|a| &a.ranges)
    }

    /// How many ciphertexts `h` was asked for (0 if it was not).
    pub fn asked_ciphertexts(&self, h: &str) -> usize {
        self.asked
            .get(h)
            .map_or(0, |a| decryption::covered(&a.ranges, self.ciphertexts))
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

    /// When `h` was asked.
    pub fn asked_at(&self, h: &str) -> Option<u64> {
        self.asked.get(h).map(|a| a.at)
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
            .filter(|(h, ask)| {
                !answered.contains(*h)
                    && !self.refused.contains(*h)
                    && now < ask.at.saturating_add(budget_ms(h))
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
                Ask {
                    at: now,
                    ranges: Vec::new(),
                },
            );
        }
        backups
    }

    /// Whether [`Decryptors::ask_spread_backups`] may have anything to ask: some decryptor
    /// refused, sent an invalid share, or still owes ciphertexts past its budget. Cheap (no
    /// per-ciphertext work), so the deadline driver calls the full search only then.
    /// `covered(h)`: how many ciphertexts `h`'s valid shares cover.
    pub fn spread_may_need_backups(
        &self,
        now: u64,
        covered: impl Fn(&str) -> usize,
        invalid: &BTreeSet<String>,
        budget_ms: impl Fn(&str, usize) -> u64,
    ) -> bool {
        self.asked.iter().any(|(h, ask)| {
            let owed = decryption::covered(&ask.ranges, self.ciphertexts);
            self.refused.contains(h)
                || invalid.contains(h)
                || (covered(h) < owed && now >= ask.at.saturating_add(budget_ms(h, owed)))
        })
    }

    /// [`Decryptors::ask_backups`] for a spread decryption, ciphertext by ciphertext: wherever
    /// the valid shares (`coverage`, per ciphertext) and the shares still expected on time fall
    /// short of `t`, the ciphertext is added to the asks of the first hospitals in `order` that
    /// can still help (not refused, no invalid share, nothing late, not already asked for it),
    /// whose clocks restart at `now`. `covered_by(h)`: the ciphertexts `h`'s valid shares cover;
    /// `budget_ms(h, n)`: how long `h` may take for `n` ciphertexts. Returns the hospitals newly
    /// asked for something.
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
        // Each asked hospital's outstanding ciphertexts, and whether it is still on time.
        let mut expected = coverage[..n].to_vec();
        let mut blocked: BTreeSet<&str> = self.refused.iter().map(String::as_str).collect();
        blocked.extend(invalid.iter().map(String::as_str));
        let mut holds: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
        for (h, ask) in &self.asked {
            let asked: BTreeSet<u64> = decryption::indices(&ask.ranges, n)
                .into_iter()
                .map(|j| j as u64)
                .collect();
            let done = covered_by(h);
            let pending: Vec<u64> = asked.difference(&done).copied().collect();
            let alive = !blocked.contains(h.as_str());
            if !pending.is_empty() && alive {
                if now < ask.at.saturating_add(budget_ms(h, pending.len())) {
                    for &j in &pending {
                        expected[j as usize] += 1;
                    }
                } else {
                    blocked.insert(h.as_str()); // late: given nothing more
                }
            }
            holds.insert(h.as_str(), asked);
        }
        let holds: BTreeMap<String, BTreeSet<u64>> =
            holds.into_iter().map(|(h, s)| (h.to_owned(), s)).collect();
        let blocked: BTreeSet<String> = blocked.into_iter().map(str::to_owned).collect();
        let mut extra: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
        for (j, &have) in expected.iter().enumerate() {
            let mut need = t.saturating_sub(have);
            for h in order {
                if need == 0 {
                    break;
                }
                let held = holds
                    .get(h.as_str())
                    .is_some_and(|s| s.contains(&(j as u64)));
                if !held && !blocked.contains(h.as_str()) {
                    extra.entry(h.clone()).or_default().insert(j as u64);
                    need -= 1;
                }
            }
        }
        let mut newly = Vec::new();
        for (h, more) in extra {
            let mut all: BTreeSet<u64> = holds.get(h.as_str()).cloned().unwrap_or_default();
            all.extend(more);
            self.asked.insert(
                h.clone(),
                Ask {
                    at: now,
                    ranges: decryption::ranges_of(&all),
                },
            );
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
        assert_eq!(d.asked_at("b2"), Some(6_200));
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
        let coverage = [0; 6];
        let budget = |_: &str, _: usize| 5_000;
        assert!(d
            .ask_spread_backups(2_000, &order, &coverage, nothing, &none, 2, budget)
            .is_empty());
        assert!(!d.spread_may_need_backups(2_000, |_| 0, &none, budget));
        assert!(
            d.spread_may_need_backups(9_000, |_| 0, &none, budget),
            "all late"
        );
        assert!(
            !d.spread_may_need_backups(9_000, |_| 4, &none, budget),
            "late but done"
        );
        // h3 refuses: its blocks go to the first hospitals that do not hold them.
        d.refused("h3");
        assert!(d.spread_may_need_backups(2_100, |_| 0, &none, budget));
        assert_eq!(
            d.ask_spread_backups(2_100, &order, &coverage, nothing, &none, 2, budget),
            ["h1", "h2"]
        );
        assert_eq!(d.ranges("h1"), Some(&vec![[0, 6]]));
        assert_eq!(d.ranges("h2"), Some(&vec![[0, 6]]));
        assert_eq!(d.asked_at("h1"), Some(2_100));
        assert!(!d.is_asked("h4"));
        assert!(d
            .ask_spread_backups(2_200, &order, &coverage, nothing, &none, 2, budget)
            .is_empty());
        // h1 answered its first ciphertexts and then went quiet past its budget: what it still
        // owes goes to h4, the only one left who holds none of it.
        let covered = |h: &str| -> BTreeSet<u64> {
            if h == "h1" {
                [0, 1, 4, 5].into_iter().collect()
            } else {
                BTreeSet::new()
            }
        };
        let coverage = [1, 1, 0, 0, 1, 1];
        assert_eq!(
            d.ask_spread_backups(9_000, &order, &coverage, covered, &none, 2, |h, _| {
                if h == "h1" {
                    1_000
                } else {
                    60_000
                }
            }),
            ["h4"]
        );
        assert_eq!(d.ranges("h4"), Some(&vec![[2, 4]]));
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
