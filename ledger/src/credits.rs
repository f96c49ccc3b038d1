//! Credits: the incentive accounting of a job, after DeepChain (Weng et al., IEEE TDSC 2019).
//!
//! # Model
//!
//! Amounts are whole credits (`u64`); there are no floats anywhere in balances. Credits live in
//! [`Account`]s and move only by [`Movement`]s, which the coordinator records in the ledger and any
//! auditor can [`replay`]:
//!
//! - the consortium [`Mint`](Movement::Mint)s the initial allocation of researchers and hospitals
//!   (the only movement that creates credits);
//! - a researcher [`Fund`](Movement::Fund)s a job's budget into its escrow, [`Account::Escrow`];
//! - a hospital [`PostDeposit`](Movement::PostDeposit)s a stake at enrolment into
//!   [`Account::Deposit`];
//! - each round, honest participation is paid from the escrow ([`Reward`](Movement::Reward)) and
//!   misbehaviour is taken from the deposit ([`Penalty`](Movement::Penalty)), as computed by the
//!   versioned [`Policy`] through [`round_movements_capped`];
//! - at the end the deposit goes back to its hospital ([`ReturnDeposit`](Movement::ReturnDeposit)) and
//!   what is left in escrow back to a researcher who funded the job ([`Refund`](Movement::Refund)).
//!
//! Penalties go to [`Account::Treasury`], the consortium's account. They are *not* burned: credits
//! are conserved by every movement except `Mint`, so the total supply only ever grows by minting and
//! the slashed stakes stay visible. No movement spends from the treasury (redistribution, if the
//! consortium wants it, is a future versioned movement).
//!
//! # Invariants
//!
//! Enforced by [`Credits::apply`] on write, which is all-or-nothing (a refused movement changes
//! nothing and returns [`LedgerError::Credit`]):
//! - no balance goes negative: a debit larger than the balance is refused, naming the account, its
//!   balance and the amount;
//! - a hospital is rewarded at most once and penalised at most once per (job, round);
//! - zero-amount movements are refused (including returning an empty deposit or refunding an empty
//!   escrow), as is a penalty without a reason;
//! - arithmetic is checked: a credit or a mint that would overflow `u64` is refused;
//! - `Mint` only targets researchers and hospitals, never escrow, deposit or treasury;
//! - `Refund` only pays a researcher who funded that job.
//!
//! Checked on verification by [`Credits::check_invariants`]: the balances, recomputed, sum to the
//! total supply, and no account is stored with a zero balance (an account that reaches zero is
//! removed, so "present" always means "holds credits").

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{LedgerError, Result};

/// An account holding credits. The serialized form (externally tagged, snake_case) is what ledger
/// records store, so it is part of the format.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Account {
    /// A researcher, who funds jobs.
    Researcher(String),
    /// A hospital, which trains and is rewarded.
    Hospital(String),
    /// The budget of a job (by job id), funded by researchers and paying rewards.
    Escrow(u64),
    /// The stake a hospital posted when enrolling in a job, from which penalties are taken.
    Deposit {
        /// The job.
        job: u64,
        /// The hospital that posted it.
        hospital: String,
    },
    /// The consortium's treasury, where penalties go (credits are not burned).
    Treasury,
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::Researcher(name) => write!(f, "researcher {name:?}"),
            Account::Hospital(name) => write!(f, "hospital {name:?}"),
            Account::Escrow(job) => write!(f, "escrow of job {job}"),
            Account::Deposit { job, hospital } => {
                write!(f, "deposit of hospital {hospital:?} in job {job}")
            }
            Account::Treasury => write!(f, "treasury"),
        }
    }
}

/// One movement of credits, as recorded in the ledger. See the [module docs](self) for the rules
/// [`Credits::apply`] enforces on each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Movement {
    /// Initial allocation by the consortium: creates `amount` credits in `to` (a researcher or a
    /// hospital), increasing the total supply.
    Mint {
        /// The researcher or hospital credited.
        to: Account,
        /// Credits created.
        amount: u64,
    },
    /// A researcher funds a job: researcher -> escrow of `job`.
    Fund {
        /// The job.
        job: u64,
        /// The researcher paying.
        researcher: String,
        /// Credits moved.
        amount: u64,
    },
    /// A hospital posts its enrolment deposit: hospital -> deposit of (`job`, `hospital`).
    PostDeposit {
        /// The job.
        job: u64,
        /// The hospital paying.
        hospital: String,
        /// Credits moved.
        amount: u64,
    },
    /// A round's reward: escrow of `job` -> hospital; at most once per (job, round, hospital).
    Reward {
        /// The job.
        job: u64,
        /// The round rewarded.
        round: u64,
        /// The hospital paid.
        hospital: String,
        /// Credits moved.
        amount: u64,
    },
    /// A round's penalty: deposit of (`job`, `hospital`) -> treasury; at most once per
    /// (job, round, hospital).
    Penalty {
        /// The job.
        job: u64,
        /// The round penalised.
        round: u64,
        /// The hospital penalised.
        hospital: String,
        /// Credits moved.
        amount: u64,
        /// Why (non-empty), e.g. `"missed_submission"`.
        reason: String,
    },
    /// The whole deposit of (`job`, `hospital`) goes back to the hospital.
    ReturnDeposit {
        /// The job.
        job: u64,
        /// The hospital refunded.
        hospital: String,
    },
    /// The whole remaining escrow of `job` goes back to `researcher`, who must have funded it
    /// (when the job finishes or fails).
    Refund {
        /// The job.
        job: u64,
        /// The researcher refunded.
        researcher: String,
    },
}

/// The credit state: balances, total supply, and which (job, round, hospital) were already rewarded
/// or penalised. Changed only by [`Credits::apply`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credits {
    balances: BTreeMap<Account, u64>,
    total_supply: u64,
    rewarded: BTreeSet<(u64, u64, String)>,
    penalised: BTreeSet<(u64, u64, String)>,
    funders: BTreeSet<(u64, String)>,
}

/// What a movement does, fully checked; committing it cannot fail.
struct Plan {
    /// The account debited and its new balance (none for a mint).
    debit: Option<(Account, u64)>,
    /// The account credited and its new balance.
    credit: (Account, u64),
    /// The total supply afterwards.
    total_supply: u64,
    /// A (job, round, hospital) to mark rewarded (`true`) or penalised (`false`).
    mark: Option<(bool, (u64, u64, String))>,
    /// A (job, researcher) to remember as a funder.
    funder: Option<(u64, String)>,
}

fn refuse<T>(message: String) -> Result<T> {
    Err(LedgerError::Credit(message))
}

impl Credits {
    /// An empty ledger: no accounts, zero supply.
    pub fn new() -> Self {
        Self::default()
    }

    /// The balance of `account` (zero if it holds nothing).
    pub fn balance(&self, account: &Account) -> u64 {
        self.balances.get(account).copied().unwrap_or(0)
    }

    /// All credits ever minted (conserved by every other movement).
    pub fn total_supply(&self) -> u64 {
        self.total_supply
    }

    /// The accounts holding credits, with their balances (never zero).
    pub fn balances(&self) -> &BTreeMap<Account, u64> {
        &self.balances
    }

    /// Whether `hospital` was already rewarded for `round` of `job`.
    pub fn is_rewarded(&self, job: u64, round: u64, hospital: &str) -> bool {
        self.rewarded.contains(&(job, round, hospital.to_owned()))
    }

    /// Whether `hospital` was already penalised for `round` of `job`.
    pub fn is_penalised(&self, job: u64, round: u64, hospital: &str) -> bool {
        self.penalised.contains(&(job, round, hospital.to_owned()))
    }

    /// Applies one movement, all-or-nothing: on error ([`LedgerError::Credit`], saying why) nothing
    /// changes.
    pub fn apply(&mut self, movement: &Movement) -> Result<()> {
        let plan = self.plan(movement)?;
        if let Some((account, balance)) = plan.debit {
            self.set(account, balance);
        }
        self.set(plan.credit.0, plan.credit.1);
        self.total_supply = plan.total_supply;
        match plan.mark {
            Some((true, key)) => {
                self.rewarded.insert(key);
            }
            Some((false, key)) => {
                self.penalised.insert(key);
            }
            None => {}
        }
        if let Some(funder) = plan.funder {
            self.funders.insert(funder);
        }
        Ok(())
    }

    /// Recomputes the invariants: the balances sum to the total supply, and no zero balance is
    /// stored. Returns [`LedgerError::Credit`] describing the first violation.
    pub fn check_invariants(&self) -> Result<()> {
        let mut sum: u128 = 0;
        for (account, &balance) in &self.balances {
            if balance == 0 {
                return refuse(format!("{account} is stored with a zero balance"));
            }
            sum += u128::from(balance);
        }
        if sum != u128::from(self.total_supply) {
            return refuse(format!(
                "balances sum to {sum} but the total supply is {}",
                self.total_supply
            ));
        }
        Ok(())
    }

    /// Stores a balance, removing the account when it reaches zero.
    fn set(&mut self, account: Account, balance: u64) {
        if balance == 0 {
            self.balances.remove(&account);
        } else {
            self.balances.insert(account, balance);
        }
    }

    /// Checks `movement` against the current state and computes its effect, without changing
    /// anything.
    fn plan(&self, movement: &Movement) -> Result<Plan> {
        let (debit, credit, amount, mark, funder) = match movement {
            Movement::Mint { to, amount } => {
                if !matches!(to, Account::Researcher(_) | Account::Hospital(_)) {
                    return refuse(format!(
                        "mint may only credit a researcher or a hospital, not the {to}"
                    ));
                }
                (None, to.clone(), *amount, None, None)
            }
            Movement::Fund {
                job,
                researcher,
                amount,
            } => (
                Some(Account::Researcher(researcher.clone())),
                Account::Escrow(*job),
                *amount,
                None,
                Some((*job, researcher.clone())),
            ),
            Movement::PostDeposit {
                job,
                hospital,
                amount,
            } => (
                Some(Account::Hospital(hospital.clone())),
                Account::Deposit {
                    job: *job,
                    hospital: hospital.clone(),
                },
                *amount,
                None,
                None,
            ),
            Movement::Reward {
                job,
                round,
                hospital,
                amount,
            } => {
                if self.is_rewarded(*job, *round, hospital) {
                    return refuse(format!(
                        "hospital {hospital:?} was already rewarded for round {round} of job {job}"
                    ));
                }
                (
                    Some(Account::Escrow(*job)),
                    Account::Hospital(hospital.clone()),
                    *amount,
                    Some((true, (*job, *round, hospital.clone()))),
                    None,
                )
            }
            Movement::Penalty {
                job,
                round,
                hospital,
                amount,
                reason,
            } => {
                if self.is_penalised(*job, *round, hospital) {
                    return refuse(format!(
                        "hospital {hospital:?} was already penalised for round {round} of job {job}"
                    ));
                }
                if reason.trim().is_empty() {
                    return refuse(format!(
                        "penalty of hospital {hospital:?} for round {round} of job {job} has no reason"
                    ));
                }
                (
                    Some(Account::Deposit {
                        job: *job,
                        hospital: hospital.clone(),
                    }),
                    Account::Treasury,
                    *amount,
                    Some((false, (*job, *round, hospital.clone()))),
                    None,
                )
            }
            Movement::ReturnDeposit { job, hospital } => {
                let from = Account::Deposit {
                    job: *job,
                    hospital: hospital.clone(),
                };
                let whole = self.balance(&from);
                (
                    Some(from),
                    Account::Hospital(hospital.clone()),
                    whole,
                    None,
                    None,
                )
            }
            Movement::Refund { job, researcher } => {
                if !self.funders.contains(&(*job, researcher.clone())) {
                    return refuse(format!(
                        "researcher {researcher:?} never funded job {job}, so cannot be refunded"
                    ));
                }
                let from = Account::Escrow(*job);
                let whole = self.balance(&from);
                (
                    Some(from),
                    Account::Researcher(researcher.clone()),
                    whole,
                    None,
                    None,
                )
            }
        };
        if amount == 0 {
            return match &debit {
                Some(from) => refuse(format!(
                    "zero-amount movement from the {from} to the {credit}"
                )),
                None => refuse(format!("zero-amount mint to the {credit}")),
            };
        }
        let (debit, total_supply) = match debit {
            Some(from) => {
                let balance = self.balance(&from);
                let Some(left) = balance.checked_sub(amount) else {
                    return refuse(format!(
                        "insufficient funds in the {from}: balance {balance}, amount {amount}"
                    ));
                };
                (Some((from, left)), self.total_supply)
            }
            None => match self.total_supply.checked_add(amount) {
                Some(supply) => (None, supply),
                None => {
                    return refuse(format!(
                        "minting {amount} would overflow the total supply {}",
                        self.total_supply
                    ))
                }
            },
        };
        let balance = self.balance(&credit);
        let Some(new_balance) = balance.checked_add(amount) else {
            return refuse(format!(
                "crediting {amount} would overflow the {credit} (balance {balance})"
            ));
        };
        Ok(Plan {
            debit,
            credit: (credit, new_balance),
            total_supply,
            mark,
            funder,
        })
    }
}

/// Applies `movements` in order to an empty ledger. On the first refused movement, returns
/// [`LedgerError::Credit`] naming its index (from 0) and the reason.
pub fn replay(movements: &[Movement]) -> Result<Credits> {
    let mut credits = Credits::new();
    for (index, movement) in movements.iter().enumerate() {
        credits.apply(movement).map_err(|e| match e {
            LedgerError::Credit(why) => LedgerError::Credit(format!("movement {index}: {why}")),
            other => LedgerError::Credit(format!("movement {index}: {other}")),
        })?;
    }
    Ok(credits)
}

/// The incentive policy, a versioned pure rule that an auditor recomputes from the recorded round
/// outcome (see [`round_movements`] for the rule itself). Ledger records name the version; a rule
/// change is a new version, never an edit of an old one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The version of the rule; [`Policy::by_version`] maps it back to the parameters.
    pub version: u32,
    /// The reward pool of one round, split among enrolled hospitals by declared samples.
    pub reward_per_round: u64,
    /// Penalty for an enrolled hospital that submitted no update in the round.
    pub penalty_missed_submission: u64,
    /// Penalty for a hospital asked for a decryption share that gave none.
    pub penalty_missed_share: u64,
    /// Penalty for a hospital whose decryption share failed verification.
    pub penalty_invalid_share: u64,
}

impl Policy {
    /// Version 1: a pool of 100 credits per round; penalties 20 (missed submission), 30 (missed
    /// share: it stalls decryption for everyone) and 50 (invalid share: misbehaviour, not just
    /// absence).
    pub const V1: Policy = Policy {
        version: 1,
        reward_per_round: 100,
        penalty_missed_submission: 20,
        penalty_missed_share: 30,
        penalty_invalid_share: 50,
    };

    /// The policy of a given version, for auditors; [`LedgerError::InvalidArgument`] if unknown.
    pub fn by_version(version: u32) -> Result<Policy> {
        match version {
            1 => Ok(Policy::V1),
            other => Err(LedgerError::InvalidArgument(format!(
                "unknown credit policy version {other} (known: 1)"
            ))),
        }
    }
}

/// What happened in one round, as far as incentives are concerned. Lists are sets of hospital
/// names; order and duplicates do not matter to [`round_movements`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundOutcome {
    /// Hospitals enrolled in the job, with the sample count each declared at enrolment.
    pub enrolled: Vec<(String, u64)>,
    /// Hospitals that submitted an update this round.
    pub submitted: Vec<String>,
    /// Hospitals whose decryption share verified.
    pub shares_valid: Vec<String>,
    /// Hospitals whose decryption share failed verification.
    pub shares_invalid: Vec<String>,
    /// Hospitals asked for a decryption share this round.
    pub shares_expected: Vec<String>,
}

impl RoundOutcome {
    /// Checks the outcome is well formed: no hospital enrolled twice, every name in the other lists
    /// enrolled, and no share both valid and invalid. [`LedgerError::InvalidArgument`] otherwise.
    /// ([`round_movements`] is total anyway; this is for the coordinator before recording.)
    pub fn validate(&self) -> Result<()> {
        let mut enrolled = BTreeSet::new();
        for (hospital, _) in &self.enrolled {
            if !enrolled.insert(hospital.as_str()) {
                return Err(LedgerError::InvalidArgument(format!(
                    "hospital {hospital:?} is enrolled twice"
                )));
            }
        }
        let lists = [
            ("submitted", &self.submitted),
            ("shares_valid", &self.shares_valid),
            ("shares_invalid", &self.shares_invalid),
            ("shares_expected", &self.shares_expected),
        ];
        for (list, names) in lists {
            if let Some(stranger) = names.iter().find(|h| !enrolled.contains(h.as_str())) {
                return Err(LedgerError::InvalidArgument(format!(
                    "hospital {stranger:?} in {list} is not enrolled"
                )));
            }
        }
        if let Some(both) = self
            .shares_valid
            .iter()
            .find(|h| self.shares_invalid.contains(h))
        {
            return Err(LedgerError::InvalidArgument(format!(
                "the share of hospital {both:?} is both valid and invalid"
            )));
        }
        Ok(())
    }
}

/// The movements `policy` prescribes for `round` of `job`, before looking at balances.
///
/// Rule (policy version 1): the round's pool `reward_per_round` is divided among the *enrolled*
/// hospitals in proportion to their declared samples, `pool * samples / total_samples` rounded down.
/// A hospital receives its part if it submitted, gave no invalid share, and, when asked for a share,
/// gave a valid one; the parts of hospitals not rewarded, and the rounding remainder, stay in
/// escrow (refunded to the researcher at the end), so no hospital gains from another's failure.
/// An enrolled hospital is penalised for each offence: no submission (`missed_submission`), an
/// invalid share (`invalid_share`), asked for a share but gave none (`missed_share`); its offences
/// make one [`Movement::Penalty`] whose amount is the (saturating) sum and whose reason lists them
/// comma-separated in that order. Names not enrolled are ignored (they have no deposit and no part);
/// a hospital enrolled twice counts with its first declaration. Zero amounts are omitted. Order:
/// all rewards, then all penalties, each sorted by hospital name.
///
/// This function does not see balances; [`Credits::apply`] refuses a reward beyond the escrow or a
/// penalty beyond the deposit. Use [`round_movements_capped`] to get what can actually be applied.
pub fn round_movements(
    policy: &Policy,
    job: u64,
    round: u64,
    outcome: &RoundOutcome,
) -> Vec<Movement> {
    let mut enrolled: BTreeMap<&str, u64> = BTreeMap::new();
    for (hospital, samples) in &outcome.enrolled {
        enrolled.entry(hospital.as_str()).or_insert(*samples);
    }
    let submitted = name_set(&outcome.submitted);
    let valid = name_set(&outcome.shares_valid);
    let invalid = name_set(&outcome.shares_invalid);
    let expected = name_set(&outcome.shares_expected);
    let total_samples: u128 = enrolled.values().map(|&s| u128::from(s)).sum();

    let mut rewards = Vec::new();
    let mut penalties = Vec::new();
    for (&hospital, &samples) in &enrolled {
        let did_submit = submitted.contains(hospital);
        let was_asked = expected.contains(hospital);
        let gave_valid = valid.contains(hospital);
        let gave_invalid = invalid.contains(hospital);

        if did_submit && !gave_invalid && (!was_asked || gave_valid) && total_samples > 0 {
            let part = u128::from(policy.reward_per_round) * u128::from(samples) / total_samples;
            let amount = u64::try_from(part).unwrap_or(policy.reward_per_round);
            if amount > 0 {
                rewards.push(Movement::Reward {
                    job,
                    round,
                    hospital: hospital.to_owned(),
                    amount,
                });
            }
        }

        let offences = [
            (
                !did_submit,
                "missed_submission",
                policy.penalty_missed_submission,
            ),
            (gave_invalid, "invalid_share", policy.penalty_invalid_share),
            (
                was_asked && !gave_valid && !gave_invalid,
                "missed_share",
                policy.penalty_missed_share,
            ),
        ];
        let mut amount = 0u64;
        let mut reasons = Vec::new();
        for (committed, reason, penalty) in offences {
            if committed && penalty > 0 {
                amount = amount.saturating_add(penalty);
                reasons.push(reason);
            }
        }
        if amount > 0 {
            penalties.push(Movement::Penalty {
                job,
                round,
                hospital: hospital.to_owned(),
                amount,
                reason: reasons.join(","),
            });
        }
    }
    rewards.extend(penalties);
    rewards
}

/// The names in `names`, as a set.
fn name_set(names: &[String]) -> BTreeSet<&str> {
    names.iter().map(String::as_str).collect()
}

/// What ending job `job` moves, whether it finished, failed or was cancelled: each hospital's
/// deposit back (in `hospitals`' order, those that still hold one), then what is left of the escrow
/// to `researcher`. This is what the coordinator records after `JobFinished` and the auditor
/// recomputes.
pub fn end_movements<'a>(
    job: u64,
    researcher: &str,
    hospitals: impl IntoIterator<Item = &'a str>,
    credits: &Credits,
) -> Vec<Movement> {
    let mut out: Vec<Movement> = hospitals
        .into_iter()
        .filter(|h| {
            credits.balance(&Account::Deposit {
                job,
                hospital: (*h).to_owned(),
            }) > 0
        })
        .map(|h| Movement::ReturnDeposit {
            job,
            hospital: h.to_owned(),
        })
        .collect();
    if credits.balance(&Account::Escrow(job)) > 0 {
        out.push(Movement::Refund {
            job,
            researcher: researcher.to_owned(),
        });
    }
    out
}

/// [`round_movements`], capped to what `credits` can pay: rewards are paid in order (sorted by
/// hospital name) while the escrow lasts, the last one possibly partially; each penalty takes at
/// most the hospital's deposit. Movements that would become zero, or that `credits` already
/// recorded for this (job, round, hospital), are omitted. Applying the result in order to `credits`
/// always succeeds. This is what the coordinator records and the auditor recomputes.
pub fn round_movements_capped(
    policy: &Policy,
    job: u64,
    round: u64,
    outcome: &RoundOutcome,
    credits: &Credits,
) -> Vec<Movement> {
    let mut escrow = credits.balance(&Account::Escrow(job));
    let mut capped = Vec::new();
    for movement in round_movements(policy, job, round, outcome) {
        match movement {
            Movement::Reward {
                job,
                round,
                hospital,
                amount,
            } => {
                let amount = amount.min(escrow);
                if amount > 0 && !credits.is_rewarded(job, round, &hospital) {
                    escrow -= amount;
                    capped.push(Movement::Reward {
                        job,
                        round,
                        hospital,
                        amount,
                    });
                }
            }
            Movement::Penalty {
                job,
                round,
                hospital,
                amount,
                reason,
            } => {
                let deposit = credits.balance(&Account::Deposit {
                    job,
                    hospital: hospital.clone(),
                });
                let amount = amount.min(deposit);
                if amount > 0 && !credits.is_penalised(job, round, &hospital) {
                    capped.push(Movement::Penalty {
                        job,
                        round,
                        hospital,
                        amount,
                        reason,
                    });
                }
            }
            // round_movements produces only rewards and penalties.
            other => capped.push(other),
        }
    }
    capped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn researcher(name: &str) -> Account {
        Account::Researcher(name.to_owned())
    }
    fn hospital(name: &str) -> Account {
        Account::Hospital(name.to_owned())
    }
    fn deposit(job: u64, name: &str) -> Account {
        Account::Deposit {
            job,
            hospital: name.to_owned(),
        }
    }
    fn mint(to: Account, amount: u64) -> Movement {
        Movement::Mint { to, amount }
    }
    fn fund(job: u64, name: &str, amount: u64) -> Movement {
        Movement::Fund {
            job,
            researcher: name.to_owned(),
            amount,
        }
    }
    fn post(job: u64, name: &str, amount: u64) -> Movement {
        Movement::PostDeposit {
            job,
            hospital: name.to_owned(),
            amount,
        }
    }
    fn reward(job: u64, round: u64, name: &str, amount: u64) -> Movement {
        Movement::Reward {
            job,
            round,
            hospital: name.to_owned(),
            amount,
        }
    }
    fn penalty(job: u64, round: u64, name: &str, amount: u64, reason: &str) -> Movement {
        Movement::Penalty {
            job,
            round,
            hospital: name.to_owned(),
            amount,
            reason: reason.to_owned(),
        }
    }

    /// Researcher r with 1000, hospitals a and b with 100 each; r funds job 7 with 300, a and b
    /// deposit 40 each.
    fn funded() -> Credits {
        replay(&[
            mint(researcher("r"), 1000),
            mint(hospital("a"), 100),
            mint(hospital("b"), 100),
            fund(7, "r", 300),
            post(7, "a", 40),
            post(7, "b", 40),
        ])
        .unwrap()
    }

    fn assert_refused(credits: &mut Credits, m: &Movement, needle: &str) {
        let before = credits.clone();
        match credits.apply(m) {
            Err(LedgerError::Credit(why)) => {
                assert!(why.contains(needle), "{why:?} should mention {needle:?}")
            }
            other => panic!("{m:?} should be refused, got {other:?}"),
        }
        assert_eq!(*credits, before, "a refused movement changed the state");
        credits.check_invariants().unwrap();
    }

    #[test]
    fn mint_fund_deposit_happy_path() {
        let c = funded();
        assert_eq!(c.total_supply(), 1200);
        assert_eq!(c.balance(&researcher("r")), 700);
        assert_eq!(c.balance(&Account::Escrow(7)), 300);
        assert_eq!(c.balance(&hospital("a")), 60);
        assert_eq!(c.balance(&deposit(7, "a")), 40);
        assert_eq!(c.balance(&deposit(7, "b")), 40);
        assert_eq!(c.balance(&Account::Treasury), 0);
        assert_eq!(c.balances().len(), 6);
        c.check_invariants().unwrap();
    }

    #[test]
    fn reward_penalty_return_refund_happy_path() {
        let mut c = funded();
        c.apply(&reward(7, 0, "a", 25)).unwrap();
        c.apply(&penalty(7, 0, "b", 15, "missed_submission"))
            .unwrap();
        assert_eq!(c.balance(&Account::Escrow(7)), 275);
        assert_eq!(c.balance(&hospital("a")), 85);
        assert_eq!(c.balance(&deposit(7, "b")), 25);
        assert_eq!(c.balance(&Account::Treasury), 15);
        assert!(c.is_rewarded(7, 0, "a") && c.is_penalised(7, 0, "b"));
        assert!(!c.is_rewarded(7, 1, "a") && !c.is_penalised(7, 0, "a"));

        c.apply(&Movement::ReturnDeposit {
            job: 7,
            hospital: "b".into(),
        })
        .unwrap();
        assert_eq!(c.balance(&hospital("b")), 85);
        assert!(!c.balances().contains_key(&deposit(7, "b")));

        c.apply(&Movement::Refund {
            job: 7,
            researcher: "r".into(),
        })
        .unwrap();
        assert_eq!(c.balance(&researcher("r")), 975);
        assert!(!c.balances().contains_key(&Account::Escrow(7)));
        assert_eq!(c.total_supply(), 1200);
        c.check_invariants().unwrap();
    }

    #[test]
    fn ending_a_job_returns_what_is_left_of_deposits_and_escrow() {
        let mut c = funded();
        let end = |c: &Credits| end_movements(7, "r", ["a", "b", "c"], c);
        let back = |h: &str| Movement::ReturnDeposit {
            job: 7,
            hospital: h.into(),
        };
        let refund = Movement::Refund {
            job: 7,
            researcher: "r".into(),
        };
        // "c" never posted a deposit: nothing comes back to it.
        assert_eq!(end(&c), vec![back("a"), back("b"), refund.clone()]);
        // A deposit taken whole by a penalty, an escrow paid out whole: nothing left to move.
        c.apply(&penalty(7, 0, "b", 40, "missed_submission"))
            .unwrap();
        c.apply(&reward(7, 0, "a", 300)).unwrap();
        assert_eq!(end(&c), vec![back("a")]);
        for m in end(&c) {
            c.apply(&m).unwrap();
        }
        assert!(end(&c).is_empty(), "a second end moves nothing");
        c.check_invariants().unwrap();
    }

    #[test]
    fn insufficient_funds_refused_and_state_unchanged() {
        let mut c = funded();
        assert_refused(&mut c, &fund(7, "r", 701), "balance 700, amount 701");
        assert_refused(&mut c, &fund(7, "nobody", 1), "researcher \"nobody\"");
        assert_refused(&mut c, &post(7, "a", 61), "balance 60, amount 61");
        assert_refused(&mut c, &reward(7, 0, "a", 301), "escrow of job 7");
        assert_refused(&mut c, &reward(8, 0, "a", 1), "balance 0, amount 1");
        assert_refused(
            &mut c,
            &penalty(7, 0, "a", 41, "x"),
            "balance 40, amount 41",
        );
        // A refused reward does not consume the (job, round, hospital) slot.
        c.apply(&reward(7, 0, "a", 300)).unwrap();
    }

    #[test]
    fn double_reward_and_double_penalty_refused() {
        let mut c = funded();
        c.apply(&reward(7, 1, "a", 10)).unwrap();
        assert_refused(&mut c, &reward(7, 1, "a", 10), "already rewarded");
        c.apply(&reward(7, 2, "a", 10)).unwrap();
        c.apply(&reward(7, 1, "b", 10)).unwrap();
        c.apply(&penalty(7, 1, "a", 5, "invalid_share")).unwrap();
        assert_refused(&mut c, &penalty(7, 1, "a", 5, "other"), "already penalised");
        c.apply(&penalty(7, 2, "a", 5, "invalid_share")).unwrap();
    }

    #[test]
    fn zero_amounts_and_empty_reason_refused() {
        let mut c = funded();
        for m in [
            mint(hospital("a"), 0),
            fund(7, "r", 0),
            post(7, "a", 0),
            reward(7, 0, "a", 0),
            penalty(7, 0, "a", 0, "x"),
            Movement::ReturnDeposit {
                job: 9,
                hospital: "a".into(),
            },
        ] {
            assert_refused(&mut c, &m, "zero-amount");
        }
        assert_refused(&mut c, &penalty(7, 0, "a", 1, " "), "no reason");
        let mut r = replay(&[mint(researcher("r"), 5), fund(3, "r", 5)]).unwrap();
        r.apply(&Movement::Refund {
            job: 3,
            researcher: "r".into(),
        })
        .unwrap();
        let again = Movement::Refund {
            job: 3,
            researcher: "r".into(),
        };
        assert_refused(&mut r, &again, "zero-amount");
    }

    #[test]
    fn refund_only_to_a_funder() {
        let mut c = funded();
        c.apply(&mint(researcher("s"), 10)).unwrap();
        let m = Movement::Refund {
            job: 7,
            researcher: "s".into(),
        };
        assert_refused(&mut c, &m, "never funded job 7");
    }

    #[test]
    fn overflow_refused() {
        let mut c = Credits::new();
        c.apply(&mint(hospital("a"), u64::MAX)).unwrap();
        assert_refused(&mut c, &mint(hospital("b"), 1), "overflow the total supply");
        assert_refused(&mut c, &mint(hospital("a"), 1), "overflow");
        c.apply(&post(1, "a", u64::MAX)).unwrap();
        assert_eq!(c.total_supply(), u64::MAX);
        c.check_invariants().unwrap();
    }

    #[test]
    fn mint_restricted_to_researchers_and_hospitals() {
        let mut c = Credits::new();
        for to in [Account::Escrow(1), deposit(1, "a"), Account::Treasury] {
            assert_refused(&mut c, &mint(to, 10), "mint may only credit");
        }
        c.apply(&mint(researcher("r"), 10)).unwrap();
        c.apply(&mint(hospital("a"), 10)).unwrap();
        assert_eq!(c.total_supply(), 20);
    }

    #[test]
    fn replay_names_the_failing_index() {
        let err = replay(&[
            mint(researcher("r"), 10),
            fund(1, "r", 4),
            fund(1, "r", 4),
            fund(1, "r", 4),
        ])
        .unwrap_err();
        let LedgerError::Credit(why) = err else {
            panic!("wrong error kind: {err:?}")
        };
        assert!(why.starts_with("movement 3: "), "{why}");
        assert!(why.contains("balance 2, amount 4"), "{why}");
    }

    #[test]
    fn check_invariants_detects_corruption() {
        let mut c = funded();
        c.total_supply += 1;
        assert!(c.check_invariants().is_err());
        let mut c = funded();
        c.balances.insert(Account::Treasury, 0);
        assert!(c.check_invariants().is_err());
    }

    #[test]
    fn movement_serialization_is_tagged() {
        let m = penalty(7, 2, "a", 5, "missed_share");
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["kind"], "penalty");
        assert_eq!(json["hospital"], "a");
        let back: Movement = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
        let d = serde_json::to_string(&mint(deposit(7, "a"), 1)).unwrap();
        assert_eq!(
            d,
            r#"{"kind":"mint","to":{"deposit":{"job":7,"hospital":"a"}},"amount":1}"#
        );
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn policy_three_hospitals_missed_submission_and_invalid_share() {
        // a: honest; b: missed its submission (but gave a valid share); c: invalid share.
        let outcome = RoundOutcome {
            enrolled: vec![("a".into(), 100), ("b".into(), 200), ("c".into(), 100)],
            submitted: names(&["a", "c"]),
            shares_valid: names(&["a", "b"]),
            shares_invalid: names(&["c"]),
            shares_expected: names(&["a", "b", "c"]),
        };
        outcome.validate().unwrap();
        let got = round_movements(&Policy::V1, 7, 3, &outcome);
        assert_eq!(
            got,
            vec![
                reward(7, 3, "a", 25),
                penalty(7, 3, "b", 20, "missed_submission"),
                penalty(7, 3, "c", 50, "invalid_share"),
            ]
        );
    }

    #[test]
    fn policy_combined_offences_make_one_penalty() {
        let outcome = RoundOutcome {
            enrolled: vec![("a".into(), 1), ("b".into(), 1)],
            submitted: names(&["a"]),
            shares_expected: names(&["a", "b"]),
            ..RoundOutcome::default()
        };
        assert_eq!(
            round_movements(&Policy::V1, 1, 0, &outcome),
            vec![
                penalty(1, 0, "a", 30, "missed_share"),
                penalty(1, 0, "b", 50, "missed_submission,missed_share"),
            ]
        );
    }

    #[test]
    fn proportional_split_remainder_stays_in_escrow() {
        let outcome = RoundOutcome {
            enrolled: vec![("a".into(), 1), ("b".into(), 1), ("c".into(), 1)],
            submitted: names(&["a", "b", "c"]),
            ..RoundOutcome::default()
        };
        let movements = round_movements(&Policy::V1, 7, 0, &outcome);
        assert_eq!(
            movements,
            vec![
                reward(7, 0, "a", 33),
                reward(7, 0, "b", 33),
                reward(7, 0, "c", 33)
            ]
        );
        let mut c = replay(&[mint(researcher("r"), 100), fund(7, "r", 100)]).unwrap();
        for m in &movements {
            c.apply(m).unwrap();
        }
        assert_eq!(c.balance(&Account::Escrow(7)), 1);
        c.check_invariants().unwrap();
    }

    #[test]
    fn capped_variant_caps_and_skips() {
        // Escrow 30 for a pool of 100 split in thirds (33 each); deposit of b only 10, none for c.
        let mut c = replay(&[
            mint(researcher("r"), 30),
            mint(hospital("b"), 10),
            fund(7, "r", 30),
            post(7, "b", 10),
        ])
        .unwrap();
        let outcome = RoundOutcome {
            enrolled: vec![("a".into(), 5), ("b".into(), 5), ("c".into(), 5)],
            submitted: names(&["a", "c"]),
            ..RoundOutcome::default()
        };
        let capped = round_movements_capped(&Policy::V1, 7, 0, &outcome, &c);
        // a gets 30 of its 33; nothing is left for c; b's 20 is capped to its deposit of 10.
        assert_eq!(
            capped,
            vec![
                reward(7, 0, "a", 30),
                penalty(7, 0, "b", 10, "missed_submission")
            ]
        );
        for m in &capped {
            c.apply(m).unwrap();
        }
        assert!(round_movements_capped(&Policy::V1, 7, 0, &outcome, &c).is_empty());
    }

    #[test]
    fn round_movements_order_is_deterministic() {
        let outcome = RoundOutcome {
            enrolled: vec![
                ("z".into(), 3),
                ("m".into(), 2),
                ("a".into(), 1),
                ("q".into(), 4),
            ],
            submitted: names(&["z", "a"]),
            shares_valid: names(&["a"]),
            shares_invalid: names(&["z"]),
            shares_expected: names(&["z", "a", "q"]),
        };
        let mut shuffled = outcome.clone();
        shuffled.enrolled.reverse();
        shuffled.submitted.reverse();
        shuffled.shares_expected.reverse();
        let got = round_movements(&Policy::V1, 2, 5, &outcome);
        assert_eq!(got, round_movements(&Policy::V1, 2, 5, &shuffled));
        let who: Vec<(&str, bool)> = got
            .iter()
            .map(|m| match m {
                Movement::Reward { hospital, .. } => (hospital.as_str(), true),
                Movement::Penalty { hospital, .. } => (hospital.as_str(), false),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            who,
            vec![("a", true), ("m", false), ("q", false), ("z", false)]
        );
    }

    #[test]
    fn policy_versions_and_outcome_validation() {
        assert_eq!(Policy::by_version(1).unwrap(), Policy::V1);
        assert!(matches!(
            Policy::by_version(2),
            Err(LedgerError::InvalidArgument(_))
        ));
        let twice = RoundOutcome {
            enrolled: vec![("a".into(), 1), ("a".into(), 2)],
            ..RoundOutcome::default()
        };
        assert!(matches!(
            twice.validate(),
            Err(LedgerError::InvalidArgument(_))
        ));
        let stranger = RoundOutcome {
            enrolled: vec![("a".into(), 1)],
            submitted: names(&["x"]),
            ..RoundOutcome::default()
        };
        assert!(stranger.validate().is_err());
        let both = RoundOutcome {
            enrolled: vec![("a".into(), 1)],
            shares_valid: names(&["a"]),
            shares_invalid: names(&["a"]),
            ..RoundOutcome::default()
        };
        assert!(both.validate().is_err());
    }
}
