//! Property tests of the credit ledger: invariants survive any sequence of movements (including
//! refused ones, which change nothing), and the capped round policy only yields applicable
//! movements.

use fedchain_ledger::credits::{
    round_movements, round_movements_capped, Account, Credits, Movement, Policy, RoundOutcome,
};
use proptest::prelude::*;

const HOSPITALS: [&str; 3] = ["h0", "h1", "h2"];
const RESEARCHERS: [&str; 2] = ["r0", "r1"];

fn hospital() -> impl Strategy<Value = String> {
    prop::sample::select(&HOSPITALS[..]).prop_map(str::to_owned)
}

fn researcher() -> impl Strategy<Value = String> {
    prop::sample::select(&RESEARCHERS[..]).prop_map(str::to_owned)
}

/// Mostly small amounts, sometimes zero, sometimes huge (to reach the overflow checks).
fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 1u64..60,
        1 => Just(0u64),
        1 => (u64::MAX - 100)..=u64::MAX,
    ]
}

fn account() -> impl Strategy<Value = Account> {
    prop_oneof![
        researcher().prop_map(Account::Researcher),
        hospital().prop_map(Account::Hospital),
        (0u64..2).prop_map(Account::Escrow),
        ((0u64..2), hospital()).prop_map(|(job, hospital)| Account::Deposit { job, hospital }),
        Just(Account::Treasury),
    ]
}

fn movement() -> impl Strategy<Value = Movement> {
    let job = 0u64..2;
    let round = 0u64..3;
    prop_oneof![
        3 => (account(), amount()).prop_map(|(to, amount)| Movement::Mint { to, amount }),
        2 => (job.clone(), researcher(), amount())
            .prop_map(|(job, researcher, amount)| Movement::Fund { job, researcher, amount }),
        2 => (job.clone(), hospital(), amount())
            .prop_map(|(job, hospital, amount)| Movement::PostDeposit { job, hospital, amount }),
        3 => (job.clone(), round.clone(), hospital(), amount()).prop_map(
            |(job, round, hospital, amount)| Movement::Reward { job, round, hospital, amount }
        ),
        3 => (job.clone(), round, hospital(), amount(), prop::sample::select(vec!["", "late"]))
            .prop_map(|(job, round, hospital, amount, reason)| Movement::Penalty {
                job,
                round,
                hospital,
                amount,
                reason: reason.to_owned(),
            }),
        1 => (job.clone(), hospital())
            .prop_map(|(job, hospital)| Movement::ReturnDeposit { job, hospital }),
        1 => (job, researcher())
            .prop_map(|(job, researcher)| Movement::Refund { job, researcher }),
    ]
}

fn sum_of_balances(credits: &Credits) -> u128 {
    credits.balances().values().map(|&b| u128::from(b)).sum()
}

/// A subset of `HOSPITALS`, chosen by a bit mask.
fn subset(mask: u8) -> Vec<String> {
    HOSPITALS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, h)| (*h).to_owned())
        .collect()
}

fn outcome() -> impl Strategy<Value = RoundOutcome> {
    (
        prop::collection::vec(0u64..1000, 3),
        0u8..8,
        0u8..8,
        0u8..8,
        0u8..8,
        0u8..8,
    )
        .prop_map(
            |(samples, enrolled, submitted, valid, invalid, expected)| RoundOutcome {
                enrolled: subset(enrolled)
                    .into_iter()
                    .map(|h| {
                        let i = HOSPITALS.iter().position(|x| *x == h).unwrap_or(0);
                        (h, samples[i])
                    })
                    .collect(),
                submitted: subset(submitted),
                shares_valid: subset(valid),
                shares_invalid: subset(invalid),
                shares_expected: subset(expected),
            },
        )
}

fn policy() -> impl Strategy<Value = Policy> {
    (0u64..300, 0u64..80, 0u64..80, 0u64..80).prop_map(|(reward, missed, share, invalid)| Policy {
        version: 1,
        reward_per_round: reward,
        penalty_missed_submission: missed,
        penalty_missed_share: share,
        penalty_invalid_share: invalid,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn invariants_hold_after_any_sequence(movements in prop::collection::vec(movement(), 0..80)) {
        let mut credits = Credits::new();
        let mut minted: u128 = 0;
        for m in &movements {
            let before = credits.clone();
            match credits.apply(m) {
                Ok(()) => {
                    if let Movement::Mint { amount, .. } = m {
                        minted += u128::from(*amount);
                    }
                }
                Err(_) => prop_assert_eq!(&credits, &before, "refused {:?} changed the state", m),
            }
            prop_assert!(credits.check_invariants().is_ok(), "{:?}", credits.check_invariants());
            prop_assert_eq!(sum_of_balances(&credits), u128::from(credits.total_supply()));
            // Only minting creates credits.
            prop_assert_eq!(minted, u128::from(credits.total_supply()));
            prop_assert!(credits.balances().values().all(|&b| b > 0));
        }
    }

    #[test]
    fn capped_round_movements_always_apply(
        escrow in 0u64..400,
        deposits in prop::collection::vec(0u64..100, 3),
        noise in prop::collection::vec(movement(), 0..40),
        outcomes in prop::collection::vec((outcome(), 0u64..3), 1..5),
        policy in policy(),
    ) {
        // A funded job 0 with random deposits, then random (possibly refused) movements on top.
        let mut credits = Credits::new();
        let mut setup = vec![Movement::Mint { to: Account::Researcher("r0".into()), amount: 1000 }];
        setup.push(Movement::Fund { job: 0, researcher: "r0".into(), amount: escrow });
        for (h, amount) in HOSPITALS.iter().zip(&deposits) {
            setup.push(Movement::Mint { to: Account::Hospital((*h).into()), amount: 100 });
            setup.push(Movement::PostDeposit { job: 0, hospital: (*h).into(), amount: *amount });
        }
        for m in setup.iter().chain(&noise) {
            let _ = credits.apply(m);
        }
        for (outcome, round) in &outcomes {
            let job = 0;
            let uncapped = round_movements(&policy, job, *round, outcome);
            let capped = round_movements_capped(&policy, job, *round, outcome, &credits);
            prop_assert!(capped.len() <= uncapped.len());
            for m in &capped {
                let applied = credits.apply(m);
                prop_assert!(applied.is_ok(), "capped movement {:?} refused: {:?}", m, applied);
            }
            prop_assert!(credits.check_invariants().is_ok());
        }
    }

    #[test]
    fn round_movements_are_sorted_rewards_first(outcome in outcome(), policy in policy()) {
        let movements = round_movements(&policy, 4, 1, &outcome);
        let keys: Vec<(u8, String)> = movements
            .iter()
            .map(|m| match m {
                Movement::Reward { hospital, .. } => (0, hospital.clone()),
                Movement::Penalty { hospital, .. } => (1, hospital.clone()),
                other => (2, format!("{other:?}")),
            })
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        prop_assert_eq!(&keys, &sorted);
        prop_assert!(keys.iter().all(|(k, _)| *k < 2));
        // Rewards never exceed the round's pool.
        let paid: u128 = movements
            .iter()
            .map(|m| match m {
                Movement::Reward { amount, .. } => u128::from(*amount),
                _ => 0,
            })
            .sum();
        prop_assert!(paid <= u128::from(policy.reward_per_round));
    }
}
