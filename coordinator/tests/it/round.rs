//! The round state machine with real keys, real encryption, real signatures and real shares.
//!
//! A 512-bit Paillier key (2-of-3) is dealt once for all tests: the key size is irrelevant to the
//! state machine, and 512 bits keep the tests fast on 2 cores while running the same code.

use std::sync::{Arc, OnceLock};

use ed25519_dalek::{Signer, SigningKey};
use fedchain_coordinator::round::{
    decryption_context, Enrolled, Phase, Round, RoundConfig, RoundError,
};
use fedchain_crypto::djn::{decode_ciphertexts, encode_ciphertexts, EncryptionTable};
use fedchain_crypto::keys::{deal, KeyShare, PublicKey};
use fedchain_crypto::quantize::{Quantizer, Rounding};
use fedchain_crypto::threshold::partial_decrypt;
use fedchain_crypto::update::UpdateCodec;
use fedchain_ledger::credits::{Account, Credits, Movement};
use fedchain_ledger::record::{Body, Outcome};
use fedchain_ledger::sha256;
use fedchain_ledger::store::Entry;
use fedchain_model_core::{fedavg, ModelDigest};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

const JOB: u64 = 7;
const ROUND: u64 = 3;
const LEN: usize = 50;
const DEADLINE: u64 = 10_000;
const FRAC_BITS: u32 = 16;
const HOSPITALS: [(&str, u64); 3] = [("h1", 10), ("h2", 20), ("h3", 30)];

struct Keys {
    pk: Arc<PublicKey>,
    shares: Vec<KeyShare>,
    table: EncryptionTable,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let (pk, shares) = deal(512, 3, 2, &mut rng).expect("deal");
        let table = EncryptionTable::new(&pk);
        Keys {
            pk: Arc::new(pk),
            shares,
            table,
        }
    })
}

fn codec() -> UpdateCodec {
    let total: u64 = HOSPITALS.iter().map(|(_, n)| n).sum();
    UpdateCodec::new(&keys().pk, Quantizer::new(FRAC_BITS, 1.0).unwrap(), total).unwrap()
}

fn signing_key(hospital: &str) -> SigningKey {
    SigningKey::from_bytes(&sha256(format!("identity of {hospital}").as_bytes()))
}

fn samples(hospital: &str) -> u64 {
    HOSPITALS.iter().find(|(h, _)| *h == hospital).unwrap().1
}

/// A round of job `JOB`, with the three hospitals enrolled in share order.
struct Fixture {
    round: Round,
    global: Vec<f32>,
    rng: ChaCha20Rng,
}

fn fixture(min_participants: usize, seed: u64) -> Fixture {
    fixture_with(min_participants, seed, false)
}

fn fixture_with(min_participants: usize, seed: u64, spread: bool) -> Fixture {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let global: Vec<f32> = (0..LEN).map(|_| rng.random_range(-1.0..1.0)).collect();
    let enrolled = HOSPITALS
        .iter()
        .enumerate()
        .map(|(i, (name, samples))| Enrolled {
            name: name.to_string(),
            identity_key: signing_key(name).verifying_key().to_bytes(),
            samples: *samples,
            share_index: i + 1,
        })
        .collect();
    let cfg = RoundConfig {
        job: JOB,
        round: ROUND,
        min_participants,
        deadline_ms: DEADLINE,
        len: LEN,
        spread,
    };
    let round = Round::new(cfg, keys().pk.clone(), codec(), enrolled, global.clone()).unwrap();
    Fixture { round, global, rng }
}

/// A hospital's update: its delta, the encoded ciphertexts and its signature over them.
struct Update {
    delta: Vec<f32>,
    bytes: Vec<u8>,
    signature: [u8; 64],
}

fn sign(hospital: &str, round: u64, bytes: &[u8]) -> [u8; 64] {
    let message = Body::submission_message(JOB, round, hospital, &sha256(bytes));
    signing_key(hospital).sign(&message).to_bytes()
}

fn update(f: &mut Fixture, hospital: &str) -> Update {
    let delta: Vec<f32> = (0..LEN).map(|_| f.rng.random_range(-0.5..0.5)).collect();
    let enc = codec()
        .encrypt(
            &keys().table,
            &delta,
            samples(hospital),
            Rounding::Nearest,
            &mut f.rng,
        )
        .unwrap();
    let bytes = encode_ciphertexts(&keys().pk, &enc.ciphertexts);
    let signature = sign(hospital, ROUND, &bytes);
    Update {
        delta,
        bytes,
        signature,
    }
}

fn submit_ok(f: &mut Fixture, now: u64, hospital: &str) -> Update {
    let u = update(f, hospital);
    let (entries, res) = f.round.submit(now, hospital, &u.bytes, u.signature);
    res.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0].body,
        Body::UpdateSubmitted {
            job: JOB,
            round: ROUND,
            hospital: hospital.into(),
            ciphertexts: sha256(&u.bytes),
            signature: u.signature,
        }
    );
    assert_eq!(entries[0].outcome, Outcome::Success);
    u
}

/// `hospital`'s decryption share of the round's aggregate, as a hospital computes it: from the
/// aggregate's bytes and the context derived from their digest.
fn share_bytes(f: &mut Fixture, hospital: &str) -> (usize, Vec<u8>) {
    let k = keys();
    let agg_bytes = f.round.aggregate_bytes().expect("closed");
    let agg = decode_ciphertexts(&k.pk, &agg_bytes, None).unwrap();
    let ctx = decryption_context(JOB, ROUND, &sha256(&agg_bytes));
    assert_eq!(f.round.context().as_deref(), Some(ctx.as_slice()));
    let party = f.round.share_index(hospital).unwrap();
    let key_share = &k.shares[party - 1];
    assert_eq!(key_share.index(), party);
    let share = partial_decrypt(&k.pk, key_share, &agg, &ctx, &mut f.rng).unwrap();
    (party, share.to_bytes(&k.pk))
}

/// `hospital`'s share of the ciphertexts `ranges` names, as a hospital given a spread task
/// computes it.
fn share_of(f: &mut Fixture, hospital: &str, ranges: &[[u64; 2]]) -> Vec<u8> {
    let k = keys();
    let agg_bytes = f.round.aggregate_bytes().expect("closed");
    let agg = decode_ciphertexts(&k.pk, &agg_bytes, None).unwrap();
    let sub: Vec<_> = fedchain_protocol::decryption::indices(ranges, agg.len())
        .into_iter()
        .map(|j| agg[j].clone())
        .collect();
    let ctx = f.round.context().unwrap();
    let party = f.round.share_index(hospital).unwrap();
    partial_decrypt(&k.pk, &k.shares[party - 1], &sub, &ctx, &mut f.rng)
        .unwrap()
        .to_bytes(&k.pk)
}

/// Funded escrow and a deposit of 100 per hospital.
fn credits() -> Credits {
    let mut c = Credits::new();
    let mut apply = |m: Movement| c.apply(&m).unwrap();
    apply(Movement::Mint {
        to: Account::Researcher("r".into()),
        amount: 1000,
    });
    apply(Movement::Fund {
        job: JOB,
        researcher: "r".into(),
        amount: 1000,
    });
    for (h, _) in HOSPITALS {
        apply(Movement::Mint {
            to: Account::Hospital(h.into()),
            amount: 100,
        });
        apply(Movement::PostDeposit {
            job: JOB,
            hospital: h.into(),
            amount: 100,
        });
    }
    c
}

fn kinds(entries: &[Entry]) -> Vec<&'static str> {
    entries.iter().map(|e| e.body.kind()).collect()
}

fn movements(entries: &[Entry]) -> Vec<Movement> {
    entries
        .iter()
        .filter_map(|e| match &e.body {
            Body::CreditsMoved { movement } => Some(movement.clone()),
            _ => None,
        })
        .collect()
}

/// The new global model equals plaintext FedAvg of the participants' updates within 2^-frac_bits.
fn assert_fedavg(global: &[f32], updates: &[(&str, &Update)], new_global: &[f32]) {
    let weighted: Vec<(u64, &[f32])> = updates
        .iter()
        .map(|(h, u)| (samples(h), u.delta.as_slice()))
        .collect();
    let reference = fedavg::apply(global, fedavg::weighted_average(&weighted).unwrap()).unwrap();
    let worst = new_global
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 2f32.powi(-(FRAC_BITS as i32)), "off by {worst}");
}

fn reward(hospital: &str, amount: u64) -> Movement {
    Movement::Reward {
        job: JOB,
        round: ROUND,
        hospital: hospital.into(),
        amount,
    }
}

fn penalty(hospital: &str, amount: u64, reason: &str) -> Movement {
    Movement::Penalty {
        job: JOB,
        round: ROUND,
        hospital: hospital.into(),
        amount,
        reason: reason.into(),
    }
}

#[test]
fn happy_path_three_hospitals_two_shares() {
    let mut f = fixture(2, 1);
    let mut log = Vec::new();
    let mut updates = Vec::new();
    for (i, (h, _)) in HOSPITALS.iter().enumerate() {
        assert!(f.round.try_close(100 + i as u64).is_empty(), "closed early");
        updates.push((*h, submit_ok(&mut f, 100 + i as u64, h)));
    }
    assert_eq!(f.round.phase(), &Phase::Collecting);

    // Everyone submitted: closes before the deadline.
    let closed = f.round.try_close(200);
    assert_eq!(f.round.phase(), &Phase::Decrypting);
    let agg_bytes = f.round.aggregate_bytes().unwrap();
    assert_eq!(
        closed.iter().map(|e| &e.body).collect::<Vec<_>>(),
        vec![&Body::RoundClosed {
            job: JOB,
            round: ROUND,
            participants: vec!["h1".into(), "h2".into(), "h3".into()],
            aggregate: sha256(&agg_bytes),
        }]
    );
    assert_eq!(f.round.aggregate_digest(), Some(sha256(&agg_bytes)));
    assert!(f.round.try_close(DEADLINE).is_empty(), "closes only once");

    let c = credits();
    // The primaries (the t lowest key-share indices) answer; the backup h3 is not needed.
    assert_eq!(
        f.round.primaries(),
        vec!["h1".to_string(), "h2".to_string()]
    );
    let (party, bytes) = share_bytes(&mut f, "h2");
    let (e1, r1) = f
        .round
        .submit_share(300, "h2", party, &[], &bytes, None, &c);
    assert_eq!(r1, Ok(false));
    assert_eq!(f.round.phase(), &Phase::Decrypting);
    let (party, bytes) = share_bytes(&mut f, "h1");
    let (e2, r2) = f
        .round
        .submit_share(301, "h1", party, &[], &bytes, None, &c);
    assert_eq!(r2, Ok(true), "the second share finalizes");
    assert_eq!(f.round.phase(), &Phase::Finalized);
    let new_global = f.round.new_global().expect("finalized").to_vec();

    let refs: Vec<(&str, &Update)> = updates.iter().map(|(h, u)| (*h, u)).collect();
    assert_fedavg(&f.global, &refs, &new_global);

    for e in &e2 {
        if let Body::RoundFinalized {
            model_before,
            model_after,
            metrics,
            ..
        } = &e.body
        {
            assert_eq!(*model_before, ModelDigest::of(&f.global).0);
            assert_eq!(*model_after, ModelDigest::of(&new_global).0);
            assert!(metrics.is_empty());
        }
    }
    for es in [&e1, &e2] {
        assert!(matches!(
            &es[0].body,
            Body::DecryptionShare { verified: true, .. }
        ));
    }

    // Pool 100 split by samples 10/20/30 of 60; nobody penalised.
    assert_eq!(
        movements(&e2),
        vec![reward("h1", 16), reward("h2", 33), reward("h3", 50)]
    );
    log.extend(updates.iter().map(|_| "update_submitted"));
    log.extend(kinds(&closed));
    log.extend(kinds(&e1));
    log.extend(kinds(&e2));
    assert_eq!(
        log,
        vec![
            "update_submitted",
            "update_submitted",
            "update_submitted",
            "round_closed",
            "decryption_share",
            "decryption_share",
            "round_finalized",
            "credits_moved",
            "credits_moved",
            "credits_moved",
        ]
    );
    // The movements apply cleanly to the snapshot.
    let mut after = c.clone();
    for m in movements(&e2) {
        after.apply(&m).unwrap();
    }

    // Late shares are refused.
    let (e, r) = f.round.submit_share(400, "h2", 2, &[], b"late", None, &c);
    assert!(matches!(r, Err(RoundError::NotDecrypting { .. })), "{r:?}");
    assert_rejected(&e, "h2");
}

#[test]
fn deadline_closes_with_two_of_three_and_penalises_the_absent() {
    let mut f = fixture(2, 2);
    let u1 = submit_ok(&mut f, 100, "h1");
    let u2 = submit_ok(&mut f, 200, "h2");
    assert!(f.round.try_close(DEADLINE - 1).is_empty());
    assert_eq!(f.round.phase(), &Phase::Collecting);
    let closed = f.round.try_close(DEADLINE);
    assert_eq!(f.round.phase(), &Phase::Decrypting);
    match &closed[..] {
        [Entry {
            body: Body::RoundClosed { participants, .. },
            ..
        }] => assert_eq!(participants, &vec!["h1".to_string(), "h2".to_string()]),
        other => panic!("{other:?}"),
    }

    // h3 did not submit but holds a key share: its share counts. h1, asked first (it has the
    // lowest key-share index), gave none and is penalised for stalling the decryption.
    let c = credits();
    let (p3, s3) = share_bytes(&mut f, "h3");
    assert_eq!(
        f.round
            .submit_share(DEADLINE + 1, "h3", p3, &[], &s3, None, &c)
            .1,
        Ok(false)
    );
    let (p2, s2) = share_bytes(&mut f, "h2");
    let (entries, res) = f
        .round
        .submit_share(DEADLINE + 2, "h2", p2, &[], &s2, None, &c);
    assert_eq!(res, Ok(true));
    let new_global = f.round.take_new_global().expect("finalized");
    assert_eq!(f.round.new_global(), None, "taken");
    assert_fedavg(&f.global, &[("h1", &u1), ("h2", &u2)], &new_global);
    assert_eq!(
        movements(&entries),
        vec![
            reward("h2", 33),
            penalty("h1", 30, "missed_share"),
            penalty("h3", 20, "missed_submission")
        ]
    );
}

#[test]
fn deadline_with_too_few_submissions_fails() {
    let mut f = fixture(2, 3);
    submit_ok(&mut f, 100, "h1");
    assert!(f.round.try_close(DEADLINE).is_empty());
    assert!(matches!(f.round.phase(), Phase::Failed(why) if why.contains("only 1 of 3")));
    assert_eq!(f.round.context(), None);
    assert_eq!(f.round.aggregate_bytes(), None);

    let u = update(&mut f, "h2");
    let (e, r) = f.round.submit(DEADLINE + 1, "h2", &u.bytes, u.signature);
    assert!(matches!(r, Err(RoundError::Closed { .. })), "{r:?}");
    assert_rejected(&e, "h2");
    let (e, r) = f
        .round
        .submit_share(DEADLINE + 1, "h1", 1, &[], b"x", None, &credits());
    assert!(matches!(r, Err(RoundError::NotDecrypting { .. })), "{r:?}");
    assert_rejected(&e, "h1");
}

/// One `RequestRejected` entry by `hospital`, outcome `MinorFailure`, naming job, round and
/// hospital.
fn assert_rejected(entries: &[Entry], hospital: &str) {
    match entries {
        [Entry {
            outcome: Outcome::MinorFailure,
            actor,
            body: Body::RequestRejected { request, reason },
            ..
        }] => {
            assert_eq!(actor.id, hospital);
            assert!(
                request.ends_with(&format!("/job/{JOB}/round/{ROUND}/hospital/{hospital}")),
                "{request}"
            );
            assert!(!reason.is_empty());
        }
        other => panic!("expected one RequestRejected, got {other:?}"),
    }
}

#[test]
fn refused_submissions_are_recorded_and_change_nothing() {
    let mut f = fixture(2, 4);
    let u1 = submit_ok(&mut f, 100, "h1");
    let before = f.round.submitted();
    let check = |f: &mut Fixture,
                 hospital: &str,
                 now: u64,
                 bytes: &[u8],
                 sig: [u8; 64],
                 want: &dyn Fn(&RoundError) -> bool| {
        let (entries, res) = f.round.submit(now, hospital, bytes, sig);
        let err = res.expect_err("must be refused");
        assert!(want(&err), "{hospital}: unexpected {err:?}");
        assert_rejected(&entries, hospital);
        assert_eq!(f.round.submitted(), before);
        assert_eq!(f.round.phase(), &Phase::Collecting);
    };

    // Unknown hospital (with a perfectly good signature of its own).
    let u = update(&mut f, "h2");
    let sig9 = sign("h9", ROUND, &u.bytes);
    check(&mut f, "h9", 110, &u.bytes, sig9, &|e| {
        *e == RoundError::NotEnrolled("h9".into())
    });
    // Replay of h1's accepted submission.
    check(&mut f, "h1", 120, &u1.bytes, u1.signature, &|e| {
        *e == RoundError::DuplicateSubmission("h1".into())
    });
    // Wrong length: 2 of the 3 ciphertexts a 50-parameter update needs.
    let cts = decode_ciphertexts(&keys().pk, &u.bytes, None).unwrap();
    assert_eq!(cts.len(), codec().ciphertexts_for(LEN));
    assert!(cts.len() >= 2);
    let short = encode_ciphertexts(&keys().pk, &cts[..cts.len() - 1]);
    let sig = sign("h2", ROUND, &short);
    let n = cts.len();
    check(&mut f, "h2", 130, &short, sig, &|e| {
        *e == RoundError::WrongLength {
            expected: n,
            found: n - 1,
        }
    });
    // Garbage bytes, correctly signed.
    for garbage in [&b""[..], b"not ciphertexts", &u.bytes[..u.bytes.len() - 1]] {
        let sig = sign("h2", ROUND, garbage);
        check(&mut f, "h2", 140, garbage, sig, &|e| {
            matches!(e, RoundError::InvalidCiphertexts(_))
        });
    }
    // A duplicated ciphertext (a replayed value inside the vector).
    let dup = encode_ciphertexts(&keys().pk, &vec![cts[0].clone(); n]);
    let sig = sign("h2", ROUND, &dup);
    check(&mut f, "h2", 145, &dup, sig, &|e| {
        matches!(e, RoundError::InvalidCiphertexts(_))
    });
    // Forged: h2's update signed by h3's key; a corrupted signature; a non-canonical one.
    let forged = sign("h3", ROUND, &u.bytes);
    let mut flipped = u.signature;
    flipped[10] ^= 1;
    for sig in [forged, flipped, [0u8; 64], [0xff; 64]] {
        check(&mut f, "h2", 150, &u.bytes, sig, &|e| {
            *e == RoundError::BadSignature("h2".into())
        });
    }
    // A signature for another round (and for another hospital's name).
    let other_round = sign("h2", ROUND + 1, &u.bytes);
    check(&mut f, "h2", 160, &u.bytes, other_round, &|e| {
        *e == RoundError::BadSignature("h2".into())
    });
    // Past the deadline, before anyone closed the round.
    check(&mut f, "h2", DEADLINE, &u.bytes, u.signature, &|e| {
        *e == RoundError::PastDeadline {
            now_ms: DEADLINE,
            deadline_ms: DEADLINE,
        }
    });

    // None of it counted against h2: its real submission is accepted.
    let (entries, res) = f.round.submit(170, "h2", &u.bytes, u.signature);
    res.unwrap();
    assert_eq!(kinds(&entries), vec!["update_submitted"]);

    // Late: the round closed at its deadline with h1 and h2.
    assert_eq!(kinds(&f.round.try_close(DEADLINE)), vec!["round_closed"]);
    let u3 = update(&mut f, "h3");
    let (entries, res) = f.round.submit(DEADLINE - 1, "h3", &u3.bytes, u3.signature);
    assert_eq!(
        res,
        Err(RoundError::Closed {
            phase: "decrypting".into()
        })
    );
    assert_rejected(&entries, "h3");
    assert!(res
        .unwrap_err()
        .to_string()
        .contains("the round closed before this submission"));
    assert_eq!(
        f.round.submitted(),
        vec!["h1".to_string(), "h2".to_string()]
    );
}

#[test]
fn refused_shares_are_recorded_and_the_round_still_finalizes() {
    let mut f = fixture(2, 5);
    let mut updates = Vec::new();
    for (h, _) in HOSPITALS {
        updates.push((h, submit_ok(&mut f, 100, h)));
    }
    let c = credits();

    // Shares before the round closed.
    let (e, r) = f.round.submit_share(150, "h1", 1, &[], b"early", None, &c);
    assert!(matches!(r, Err(RoundError::NotDecrypting { .. })), "{r:?}");
    assert_rejected(&e, "h1");

    f.round.try_close(200);
    assert_eq!(f.round.phase(), &Phase::Decrypting);

    // An invalid share: one byte of its encoding flipped (in the proof's response).
    let (p1, mut s1) = share_bytes(&mut f, "h1");
    let last = s1.len() - 1;
    s1[last] ^= 1;
    let (entries, res) = f.round.submit_share(300, "h1", p1, &[], &s1, None, &c);
    assert!(
        matches!(&res, Err(RoundError::InvalidShare { hospital, .. }) if hospital == "h1"),
        "{res:?}"
    );
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].outcome, Outcome::MinorFailure);
    assert_eq!(
        entries[0].body,
        Body::DecryptionShare {
            job: JOB,
            round: ROUND,
            hospital: "h1".into(),
            share: sha256(&s1),
            verified: false,
            ciphertexts: Vec::new(),
        }
    );
    assert_eq!(f.round.invalid_shares(), vec!["h1".to_string()]);

    // h1 cannot try again, even with its genuine share.
    let (_, good1) = share_bytes(&mut f, "h1");
    let (e, r) = f.round.submit_share(301, "h1", p1, &[], &good1, None, &c);
    assert_eq!(r, Err(RoundError::DuplicateShare("h1".into())));
    assert_rejected(&e, "h1");

    // Undecodable bytes from h2 would be invalid too; instead: refusals that record no share.
    let (p2, s2) = share_bytes(&mut f, "h2");
    let (e, r) = f.round.submit_share(302, "h9", p2, &[], &s2, None, &c);
    assert_eq!(r, Err(RoundError::NotEnrolled("h9".into())));
    assert_rejected(&e, "h9");
    // h3 relaying h2's share (claimed as party 2, then as its own index 3).
    let (e, r) = f.round.submit_share(303, "h3", p2, &[], &s2, None, &c);
    assert_eq!(
        r,
        Err(RoundError::WrongParty {
            hospital: "h3".into(),
            party: 2,
            expected: 3
        })
    );
    assert_rejected(&e, "h3");
    let (e, r) = f.round.submit_share(304, "h3", 3, &[], &s2, None, &c);
    assert!(
        matches!(r, Err(RoundError::WrongParty { party: 2, .. })),
        "{r:?}"
    );
    assert_rejected(&e, "h3");
    assert!(f.round.valid_shares().is_empty());
    assert_eq!(f.round.phase(), &Phase::Decrypting);

    // A share bound to another context (another round) does not verify.
    let k = keys();
    let agg = decode_ciphertexts(&k.pk, &f.round.aggregate_bytes().unwrap(), None).unwrap();
    let wrong_ctx = decryption_context(JOB, ROUND + 1, &f.round.aggregate_digest().unwrap());
    let replayed = partial_decrypt(&k.pk, &k.shares[1], &agg, &wrong_ctx, &mut f.rng).unwrap();
    let replayed = replayed.to_bytes(&k.pk);
    let mut probe = fixture_clone_decrypting(&updates);
    let (e, r) = probe
        .round
        .submit_share(305, "h2", 2, &[], &replayed, None, &c);
    assert!(matches!(r, Err(RoundError::InvalidShare { .. })), "{r:?}");
    assert!(matches!(
        e[0].body,
        Body::DecryptionShare {
            verified: false,
            ..
        }
    ));

    // Two valid shares finalize.
    let (e2, r2) = f.round.submit_share(310, "h2", p2, &[], &s2, None, &c);
    assert_eq!(r2, Ok(false));
    assert_eq!(kinds(&e2), vec!["decryption_share"]);
    let (p3, s3) = share_bytes(&mut f, "h3");
    let (e3, r3) = f.round.submit_share(311, "h3", p3, &[], &s3, None, &c);
    assert_eq!(r3, Ok(true));
    let new_global = f.round.new_global().expect("finalized").to_vec();
    let refs: Vec<(&str, &Update)> = updates.iter().map(|(h, u)| (*h, u)).collect();
    assert_fedavg(&f.global, &refs, &new_global);
    // h1 forfeits its reward and pays the invalid-share penalty.
    assert_eq!(
        movements(&e3),
        vec![
            reward("h2", 33),
            reward("h3", 50),
            penalty("h1", 50, "invalid_share")
        ]
    );
    // Duplicate after finalization: the round is no longer decrypting.
    let (_, r) = f.round.submit_share(312, "h2", p2, &[], &s2, None, &c);
    assert!(matches!(r, Err(RoundError::NotDecrypting { .. })), "{r:?}");
}

/// The service checks shares away from the round, off its lock ([`Round::share_check`]). Those
/// verdicts give the same outcome, and one is only used for the bytes it was reached on.
#[test]
fn shares_checked_outside_the_round_are_trusted_only_for_their_own_bytes() {
    let mut f = fixture(2, 5);
    let mut updates = Vec::new();
    for (h, _) in HOSPITALS {
        updates.push((h, submit_ok(&mut f, 100, h)));
    }
    let c = credits();
    assert!(
        f.round.share_check("h1", &[]).is_none(),
        "nothing to check yet"
    );
    f.round.try_close(200);
    assert!(
        f.round.share_check("h9", &[]).is_none(),
        "h9 is not enrolled"
    );

    // h1's genuine share checks out; the verdict cannot vouch for other bytes: with one byte of
    // the proof flipped, the round verifies afresh and refuses it.
    let (p1, good1) = share_bytes(&mut f, "h1");
    let vouched = f.round.share_check("h1", &[]).unwrap().check(&good1);
    let mut bad1 = good1.clone();
    let last = bad1.len() - 1;
    bad1[last] ^= 1;
    let (e, r) = f
        .round
        .submit_share(300, "h1", p1, &[], &bad1, Some(vouched), &c);
    assert!(
        matches!(&r, Err(RoundError::InvalidShare { hospital, .. }) if hospital == "h1"),
        "{r:?}"
    );
    assert!(matches!(
        e[0].body,
        Body::DecryptionShare {
            verified: false,
            ..
        }
    ));
    assert!(
        f.round.share_check("h1", &[]).is_none(),
        "h1 has had its turn"
    );

    // A share that fails its check outside is refused the same way.
    let k = keys();
    let agg = decode_ciphertexts(&k.pk, &f.round.aggregate_bytes().unwrap(), None).unwrap();
    let wrong_ctx = decryption_context(JOB, ROUND + 1, &f.round.aggregate_digest().unwrap());
    let replayed = partial_decrypt(&k.pk, &k.shares[1], &agg, &wrong_ctx, &mut f.rng)
        .unwrap()
        .to_bytes(&k.pk);
    let mut probe = fixture_clone_decrypting(&updates);
    let checked = probe.round.share_check("h2", &[]).unwrap().check(&replayed);
    let (_, r) = probe
        .round
        .submit_share(301, "h2", 2, &[], &replayed, Some(checked), &c);
    assert!(matches!(r, Err(RoundError::InvalidShare { .. })), "{r:?}");

    // Genuine shares checked outside finalize the round to FedAvg of the updates.
    let mut finalized = false;
    for (i, h) in ["h2", "h3"].into_iter().enumerate() {
        let (p, bytes) = share_bytes(&mut f, h);
        let checked = f.round.share_check(h, &[]).unwrap().check(&bytes);
        let (e, r) = f
            .round
            .submit_share(310 + i as u64, h, p, &[], &bytes, Some(checked), &c);
        assert!(matches!(
            e[0].body,
            Body::DecryptionShare { verified: true, .. }
        ));
        finalized = r.unwrap();
    }
    assert!(finalized, "the second share finalizes");
    let refs: Vec<(&str, &Update)> = updates.iter().map(|(h, u)| (*h, u)).collect();
    assert_fedavg(&f.global, &refs, f.round.new_global().expect("finalized"));
}

/// A separate round in `Decrypting` (same key), to probe share checks without spending the main
/// round's share slots: everyone in `updates` resubmits there.
fn fixture_clone_decrypting(updates: &[(&str, Update)]) -> Fixture {
    let mut f = fixture(2, 5);
    for (h, u) in updates {
        f.round.submit(100, h, &u.bytes, u.signature).1.unwrap();
    }
    f.round.try_close(200);
    assert_eq!(f.round.phase(), &Phase::Decrypting);
    f
}

#[test]
fn garbage_shares_never_panic_and_count_as_invalid() {
    let mut f = fixture(1, 6);
    submit_ok(&mut f, 100, "h1");
    submit_ok(&mut f, 100, "h2");
    f.round.try_close(DEADLINE);
    let c = credits();
    let (p, good) = share_bytes(&mut f, "h1");
    let inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0; 7],
        good[..good.len() / 2].to_vec(),
        [good.clone(), vec![0]].concat(),
    ];
    for (i, (hospital, bytes)) in ["h1", "h2", "h3"].iter().zip(inputs).enumerate() {
        let party = f.round.share_index(hospital).unwrap();
        let (e, r) = f
            .round
            .submit_share(300 + i as u64, hospital, party, &[], &bytes, None, &c);
        assert!(matches!(r, Err(RoundError::InvalidShare { .. })), "{r:?}");
        assert!(matches!(
            e[0].body,
            Body::DecryptionShare {
                verified: false,
                ..
            }
        ));
    }
    assert_eq!(p, 1);
    assert_eq!(f.round.phase(), &Phase::Decrypting);
    assert_eq!(f.round.invalid_shares().len(), 3);
}

#[test]
fn inconsistent_configurations_are_refused() {
    let k = keys();
    let enrolled = |n: usize| -> Vec<Enrolled> {
        HOSPITALS[..n]
            .iter()
            .enumerate()
            .map(|(i, (name, samples))| Enrolled {
                name: name.to_string(),
                identity_key: signing_key(name).verifying_key().to_bytes(),
                samples: *samples,
                share_index: i + 1,
            })
            .collect()
    };
    let cfg = |min: usize, len: usize| RoundConfig {
        job: JOB,
        round: ROUND,
        min_participants: min,
        deadline_ms: DEADLINE,
        len,
        spread: false,
    };
    let new = |cfg: RoundConfig, enrolled: Vec<Enrolled>, global: Vec<f32>| {
        Round::new(cfg, k.pk.clone(), codec(), enrolled, global)
    };
    let global = vec![0.0; LEN];
    assert!(new(cfg(2, LEN), enrolled(3), global.clone()).is_ok());
    let refused = |r: Result<Round, RoundError>| matches!(r, Err(RoundError::InvalidConfig(_)));
    assert!(refused(new(cfg(2, LEN + 1), enrolled(3), global.clone())));
    assert!(refused(new(cfg(2, 0), enrolled(3), Vec::new())));
    assert!(refused(new(cfg(0, LEN), enrolled(3), global.clone())));
    assert!(refused(new(cfg(3, LEN), enrolled(2), global.clone())));
    // Fewer hospitals than the threshold.
    assert!(refused(new(cfg(1, LEN), enrolled(1), global.clone())));
    let mut nan = global.clone();
    nan[3] = f32::NAN;
    assert!(refused(new(cfg(2, LEN), enrolled(3), nan)));
    let mut twice = enrolled(3);
    twice[2].name = "h1".into();
    assert!(refused(new(cfg(2, LEN), twice, global.clone())));
    let mut zero = enrolled(3);
    zero[0].samples = 0;
    assert!(refused(new(cfg(2, LEN), zero, global.clone())));
    let mut same_share = enrolled(3);
    same_share[2].share_index = 1;
    assert!(refused(new(cfg(2, LEN), same_share, global.clone())));
    let mut no_share = enrolled(3);
    no_share[1].share_index = 0;
    assert!(refused(new(cfg(2, LEN), no_share, global.clone())));
    let mut heavy = enrolled(3);
    heavy[0].samples = 1000;
    assert!(refused(new(cfg(2, LEN), heavy, global.clone())));
    // More hospitals than key shares.
    let mut four = enrolled(3);
    four.push(Enrolled {
        name: "h4".into(),
        identity_key: [1; 32],
        samples: 1,
        share_index: 4,
    });
    for e in &mut four {
        e.samples = 1;
    }
    assert!(refused(new(cfg(2, LEN), four, global.clone())));
    // A scaled codec's levels follow from the enrolled count: one built for another count (which
    // the hospitals' codecs would not match) is refused.
    let total: u64 = HOSPITALS.iter().map(|(_, s)| s).sum();
    let scaled = |contributors| UpdateCodec::scaled(&k.pk, 8, 1.0, total, contributors).unwrap();
    let with = |codec| {
        Round::new(
            cfg(2, LEN),
            k.pk.clone(),
            codec,
            enrolled(3),
            global.clone(),
        )
    };
    assert!(with(scaled(3)).is_ok());
    for other in [2, 4] {
        match with(scaled(other)) {
            Err(RoundError::InvalidConfig(m)) => assert!(m.contains("built for"), "{m}"),
            r => panic!("a codec for {other} with 3 enrolled: {:?}", r.map(|_| ())),
        }
    }
}

/// A spread round that every hospital submitted to, closed.
fn spread_closed(seed: u64) -> (Fixture, Vec<(&'static str, Update)>) {
    let mut f = fixture_with(2, seed, true);
    let updates = HOSPITALS
        .iter()
        .map(|(h, _)| (*h, submit_ok(&mut f, 100, h)))
        .collect();
    assert!(!f.round.try_close(200).is_empty());
    (f, updates)
}

/// Spread decryption: each of the three hospitals decrypts the two thirds of the ciphertexts the
/// spread gives it; the round finalizes when every ciphertext has two valid shares, to the same
/// FedAvg, and pays as before. Ranges the round cannot take, and a second share of the same
/// ciphertexts, are refused without counting against anyone's share.
#[test]
fn spread_shares_each_cover_their_ciphertexts_and_finalize_to_the_same_model() {
    let (mut f, updates) = spread_closed(1);
    let count = f.round.ciphertexts() as u64;
    assert!(
        count >= 3,
        "the aggregate must span the three blocks: {count}"
    );
    let plan = f.round.assignment();
    assert_eq!(f.round.primaries(), ["h1", "h2", "h3"]);
    for (_, r) in &plan {
        let mine = fedchain_protocol::decryption::covered(r, count as usize) as u64;
        assert!(mine < count && mine >= 2 * count / 3, "{plan:?}");
    }
    let c = credits();
    let (e, r) = f
        .round
        .submit_share(300, "h1", 1, &[[1, 1]], b"x", None, &c);
    assert!(matches!(r, Err(RoundError::BadRanges { .. })), "{r:?}");
    assert_rejected(&e, "h1");
    let (e, r) = f
        .round
        .submit_share(300, "h1", 1, &[[0, count + 1]], b"x", None, &c);
    assert!(matches!(r, Err(RoundError::BadRanges { .. })), "{r:?}");
    assert_rejected(&e, "h1");

    let mut last = None;
    for (i, (h, ranges)) in plan.iter().enumerate() {
        let bytes = share_of(&mut f, h, ranges);
        // Checked off the round, the verdict is used for these bytes and these ranges only.
        let checked = f.round.share_check(h, ranges).unwrap().check(&bytes);
        let (e, r) =
            f.round
                .submit_share(301 + i as u64, h, i + 1, ranges, &bytes, Some(checked), &c);
        assert_eq!(
            e[0].body,
            Body::DecryptionShare {
                job: JOB,
                round: ROUND,
                hospital: h.clone(),
                share: sha256(&bytes),
                verified: true,
                ciphertexts: ranges.clone(),
            }
        );
        if i == 0 {
            // The same ciphertexts again: refused, nothing recorded as a share.
            let (e2, r2) = f.round.submit_share(302, h, 1, ranges, &bytes, None, &c);
            assert_eq!(r2, Err(RoundError::DuplicateShare(h.clone())));
            assert_rejected(&e2, h);
        }
        if i < 2 {
            assert_eq!(r, Ok(false), "{h}: not every ciphertext has two shares yet");
        } else {
            assert_eq!(r, Ok(true), "{h}: every ciphertext has two shares");
            last = Some(e);
        }
    }
    let entries = last.unwrap();
    let new_global = f.round.new_global().expect("finalized").to_vec();
    let refs: Vec<(&str, &Update)> = updates.iter().map(|(h, u)| (*h, u)).collect();
    assert_fedavg(&f.global, &refs, &new_global);
    assert_eq!(
        movements(&entries),
        vec![reward("h1", 16), reward("h2", 33), reward("h3", 50)]
    );
}

/// A spread decryptor that never answers: the two others decrypt its ciphertexts too, in a
/// second share each, and the round finalizes; the missing decryptor is penalised for the
/// share it was asked for, and an overlapping or invalid share changes nothing.
#[test]
fn a_missing_spread_decryptor_is_covered_by_second_shares_of_the_others() {
    let (mut f, updates) = spread_closed(2);
    let count = f.round.ciphertexts();
    let plan = f.round.assignment();
    let c = credits();
    for (i, (h, ranges)) in plan.iter().take(2).enumerate() {
        let bytes = share_of(&mut f, h, ranges);
        let (_, r) = f
            .round
            .submit_share(300, h, i + 1, ranges, &bytes, None, &c);
        assert_eq!(r, Ok(false));
    }
    let coverage = f.round.coverage();
    assert_eq!(coverage.len(), count);
    assert!(
        coverage.iter().any(|&n| n < 2),
        "h3's ciphertexts lack a share"
    );
    // What each of h1, h2 lacks, as a backup would be asked.
    let lacking = |h: &str, f: &Fixture| -> Vec<[u64; 2]> {
        let have = f.round.covered_by(h);
        let short: std::collections::BTreeSet<u64> = (0..count as u64)
            .filter(|&j| f.round.coverage()[j as usize] < 2 && !have.contains(&j))
            .collect();
        fedchain_protocol::decryption::ranges_of(&short)
    };
    // A second share that overlaps h1's first is refused.
    let (_, r) = f.round.submit_share(301, "h1", 1, &[], b"x", None, &c);
    assert_eq!(r, Err(RoundError::DuplicateShare("h1".into())));
    let more1 = lacking("h1", &f);
    let bytes = share_of(&mut f, "h1", &more1);
    let (e1, r) = f.round.submit_share(302, "h1", 1, &more1, &bytes, None, &c);
    let entries = if r.unwrap() {
        e1
    } else {
        let more2 = lacking("h2", &f);
        let bytes = share_of(&mut f, "h2", &more2);
        let (e, r) = f.round.submit_share(303, "h2", 2, &more2, &bytes, None, &c);
        assert_eq!(r, Ok(true), "every ciphertext has two shares");
        e
    };
    let new_global = f.round.new_global().expect("finalized").to_vec();
    let refs: Vec<(&str, &Update)> = updates.iter().map(|(h, u)| (*h, u)).collect();
    assert_fedavg(&f.global, &refs, &new_global);
    let moved = movements(&entries);
    assert!(
        moved
            .iter()
            .any(|m| matches!(m, Movement::Penalty { hospital, .. } if hospital == "h3")),
        "{moved:?}"
    );
}
