//! C2SP signed-note, tlog-checkpoint and cosignature/witness tests for `fedchain_ledger::note`.
//!
//! Known answers come from outside this crate: the key id of a fixed key was computed with
//! Python's hashlib, and the signer, verifier and signed note of golang.org/x/mod/sumdb/note's
//! documentation example must be reproduced byte for byte.

use std::path::Path;

use fedchain_ledger::note::{
    add_signatures, checkpoint_in, open, parse, quorum, sign, Checkpoint, NoteSigner, NoteVerifier,
    Witness, MAX_SIGNATURES,
};
use fedchain_ledger::{sha256, Hash, LedgerError};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

// ---------------------------------------------------------------------------------------------
// Helpers

fn signer(name: &str) -> NoteSigner {
    NoteSigner::new(name, sha256(format!("test secret for {name}").as_bytes())).unwrap()
}

fn is_note_err<T: std::fmt::Debug>(r: &Result<T, LedgerError>) -> bool {
    matches!(r, Err(LedgerError::Note(_)))
}

fn err_msg<T: std::fmt::Debug>(r: Result<T, LedgerError>) -> String {
    r.expect_err("expected an error").to_string()
}

/// RFC 6962 leaf hash.
fn leaf(data: &[u8]) -> Hash {
    let mut b = vec![0u8];
    b.extend_from_slice(data);
    sha256(&b)
}

fn node(l: &Hash, r: &Hash) -> Hash {
    let mut b = vec![1u8];
    b.extend_from_slice(l);
    b.extend_from_slice(r);
    sha256(&b)
}

fn split_point(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// RFC 6962 Merkle tree hash of leaf hashes.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => sha256(b""),
        1 => leaves[0],
        n => {
            let k = split_point(n);
            node(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// RFC 6962 section 2.1.2 SUBPROOF.
fn subproof(m: usize, leaves: &[Hash], complete: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if complete { vec![] } else { vec![mth(leaves)] };
    }
    let k = split_point(n);
    if m <= k {
        let mut p = subproof(m, &leaves[..k], complete);
        p.push(mth(&leaves[k..]));
        p
    } else {
        let mut p = subproof(m - k, &leaves[k..], false);
        p.push(mth(&leaves[..k]));
        p
    }
}

fn consistency_proof(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    subproof(m, leaves, true)
}

fn leaves(n: usize, tag: &str) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf(format!("{tag} record {i}").as_bytes()))
        .collect()
}

fn checkpoint(origin: &str, leaves: &[Hash]) -> Checkpoint {
    Checkpoint {
        origin: origin.to_string(),
        size: leaves.len() as u64,
        root: mth(leaves),
        extensions: vec![],
    }
}

const ORIGIN: &str = "fedchain.example/log";

// ---------------------------------------------------------------------------------------------
// Keys

/// RFC 8032 section 7.1, TEST 1.
const RFC8032_SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const RFC8032_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";

fn hex32(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

#[test]
fn key_id_known_answer_from_python_hashlib() {
    // python3: hashlib.sha256(b"fedchain.example/log" + b"\n\x01" + pk).hexdigest()[:8]
    let v = NoteVerifier::new("fedchain.example/log", hex32(RFC8032_PUBLIC)).unwrap();
    assert_eq!(hex::encode(v.key_id()), "27c536d6");
    // python3: base64.b64encode(b"\x01" + pk)
    assert_eq!(
        v.to_vkey(),
        "fedchain.example/log+27c536d6+AddamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea"
    );
    let v2 = NoteVerifier::new("PeterNeumann", hex32(RFC8032_PUBLIC)).unwrap();
    assert_eq!(hex::encode(v2.key_id()), "f312613b");
    // The signer derives the RFC 8032 public key from the secret.
    let s = NoteSigner::new("fedchain.example/log", hex32(RFC8032_SECRET)).unwrap();
    assert_eq!(s.verifier(), v);
    assert_eq!(s.key_id(), v.key_id());
}

// golang.org/x/mod/sumdb/note documentation example and tests.
const GO_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                       then you don't know what your problem is.\n";
const GO_NOTE: &str = "If you think cryptography is the answer to your problem,\n\
                       then you don't know what your problem is.\n\
                       \n\
                       \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

#[test]
fn go_sumdb_note_example_byte_for_byte() {
    let s = NoteSigner::from_skey(GO_SKEY).unwrap();
    assert_eq!(s.name(), "PeterNeumann");
    assert_eq!(s.to_skey(), GO_SKEY);
    assert_eq!(s.verifier().to_vkey(), GO_VKEY);
    let v = NoteVerifier::from_vkey(GO_VKEY).unwrap();
    assert_eq!(s.verifier(), v);
    assert_eq!(sign(GO_TEXT, &[&s]).unwrap(), GO_NOTE);
    let (note, verified) = open(GO_NOTE, std::slice::from_ref(&v)).unwrap();
    assert_eq!(note.text, GO_TEXT);
    assert_eq!(verified, vec![v.clone()]);
    assert!(is_note_err(&open(
        &GO_NOTE.replace("cryptography", "cryptographY"),
        &[v]
    )));
}

#[test]
fn third_party_vkeys_parse_and_round_trip() {
    // From golang.org/x/mod and transparency-dev/formats tests; the first one's base64 holds a '+'.
    for vkey in [
        "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6",
        "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop",
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        GO_VKEY,
    ] {
        let v = NoteVerifier::from_vkey(vkey).unwrap();
        assert_eq!(v.to_vkey(), vkey);
    }
}

#[test]
fn vkey_and_skey_round_trip_random_keys() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    for i in 0..50 {
        let name = format!("hospital-{i}.example/witness");
        let s = NoteSigner::new(&name, rng.random::<[u8; 32]>()).unwrap();
        let v = s.verifier();
        assert_eq!(NoteVerifier::from_vkey(&v.to_vkey()).unwrap(), v);
        let s2 = NoteSigner::from_skey(&s.to_skey()).unwrap();
        assert_eq!(s2.verifier(), v);
        assert_eq!(s2.to_skey(), s.to_skey());
        let id_hex = v.to_vkey().split('+').nth(1).unwrap().to_string();
        assert_eq!(id_hex, hex::encode(v.key_id()));
        assert_eq!(id_hex.len(), 8);
        assert!(id_hex
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
    }
}

#[test]
fn vkey_every_mangling_rejected() {
    // As golang.org/x/mod's TestNewVerifier: every proper substring and every byte changed.
    let b = GO_VKEY.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if i == 0 && j == b.len() {
                continue;
            }
            assert!(
                NoteVerifier::from_vkey(&GO_VKEY[i..j]).is_err(),
                "accepted substring {:?}",
                &GO_VKEY[i..j]
            );
        }
    }
    for i in 0..b.len() {
        let mut m = b.to_vec();
        m[i] = m[i].wrapping_add(1);
        if let Ok(s) = String::from_utf8(m) {
            assert!(NoteVerifier::from_vkey(&s).is_err(), "accepted {s:?}");
        }
    }
}

#[test]
fn key_text_forms_rejected() {
    for bad in [
        "",
        "PeterNeumann",
        "PeterNeumann+c74f20a3",
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", // uppercase id
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  // 7 digits
        "PeterNeumann+00000000+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", // wrong id
        "PeterNeumann+c74f20a3+BBpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", // type byte
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",   // short key
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW=",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ] {
        assert!(is_note_err(&NoteVerifier::from_vkey(bad)), "{bad:?}");
    }
    // An identity point (small order) with a matching key id is still refused.
    let mut weak = [0u8; 32];
    weak[0] = 1;
    assert!(is_note_err(&NoteVerifier::new("weak", weak)));
    // Signer forms.
    assert!(NoteSigner::from_skey(GO_VKEY).is_err());
    assert!(NoteSigner::from_skey(&GO_SKEY.replace("c74f20a3", "c74f20a4")).is_err());
    assert!(NoteSigner::from_skey(&GO_SKEY.replace("+AYEK", "+AoEK")).is_err());
    // The secret never appears in an error or in Debug.
    let secret_b64 = GO_SKEY.rsplit_once("c74f20a3+").unwrap().1;
    let e = err_msg(NoteSigner::from_skey(
        &GO_SKEY.replace("c74f20a3", "c74f20a4"),
    ));
    assert!(!e.contains(secret_b64), "{e}");
    let dbg = format!("{:?}", NoteSigner::from_skey(GO_SKEY).unwrap());
    assert!(
        dbg.contains("PeterNeumann") && !dbg.contains("AYEK"),
        "{dbg}"
    );
}

#[test]
fn key_names_validated() {
    for bad in [
        "",
        "a b",
        "a+b",
        "a\tb",
        "a\u{a0}b",
        "a\u{2003}b",
        "a\nb",
        "a\u{1}b",
    ] {
        assert!(is_note_err(&NoteSigner::new(bad, [1; 32])), "{bad:?}");
        let public = signer("x").verifier().public_key();
        assert!(is_note_err(&NoteVerifier::new(bad, public)), "{bad:?}");
    }
    assert!(NoteSigner::new("hospital-a.example/w1", [1; 32]).is_ok());
    assert!(NoteSigner::new("ünï—cødé", [1; 32]).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Signed notes

#[test]
fn sign_open_round_trip() {
    let a = signer("a.example/log");
    let b = signer("b.example/w");
    let text = "line one\n\nline three after a blank line\n";
    let note = sign(text, &[&a, &b]).unwrap();
    assert!(note.starts_with(text));
    assert_eq!(note.matches('\u{2014}').count(), 2);
    let parsed = parse(&note).unwrap();
    assert_eq!(parsed.text, text);
    assert_eq!(parsed.signatures.len(), 2);
    assert_eq!(parsed.signatures[0].name, "a.example/log");
    assert_eq!(parsed.signatures[0].key_id, a.key_id());
    assert_eq!(parsed.signatures[0].signature.len(), 64);
    assert_eq!(parsed.encode(), note);

    let (n, v) = open(&note, &[a.verifier(), b.verifier()]).unwrap();
    assert_eq!(n.text, text);
    assert_eq!(v, vec![a.verifier(), b.verifier()]);
    let (_, v) = open(&note, &[b.verifier()]).unwrap();
    assert_eq!(v, vec![b.verifier()]);

    // Texts with edge shapes still round trip.
    for text in ["\n", "x\n", "x\n\n", "\n\n\nx\n"] {
        let note = sign(text, &[&a]).unwrap();
        assert_eq!(open(&note, &[a.verifier()]).unwrap().0.text, text);
    }
}

#[test]
fn sign_rejects_bad_input() {
    let a = signer("a");
    for bad in ["", "no newline", "tab\there\n", "cr\r\n", "nul\0\n"] {
        assert!(is_note_err(&sign(bad, &[&a])), "{bad:?}");
    }
    assert!(is_note_err(&sign("ok\n", &[])));
}

#[test]
fn unknown_key_signatures_ignored() {
    let a = signer("a.example");
    let x = signer("x.example");
    let note = sign("hello\n", &[&x, &a]).unwrap();
    let (_, v) = open(&note, &[a.verifier()]).unwrap();
    assert_eq!(v, vec![a.verifier()]);

    // Same name as a known key but another id, and same id under another name: both unknown.
    let other_a = NoteSigner::new("a.example", [9; 32]).unwrap();
    let renamed = NoteSignerWithId::line("zzz", a.key_id(), &[0u8; 64]);
    let note = add_signatures(&note, &[&other_a]).unwrap() + &renamed;
    let (_, v) = open(&note, &[a.verifier()]).unwrap();
    assert_eq!(v, vec![a.verifier()]);

    // Unknown signatures of odd lengths are fine.
    let note = sign("hello\n", &[&a]).unwrap() + &NoteSignerWithId::line("q", [1, 2, 3, 4], &[7]);
    assert!(open(&note, &[a.verifier()]).is_ok());
}

/// Writes raw signature lines.
struct NoteSignerWithId;
impl NoteSignerWithId {
    fn line(name: &str, id: [u8; 4], sig: &[u8]) -> String {
        use base64::Engine as _;
        let mut raw = id.to_vec();
        raw.extend_from_slice(sig);
        format!(
            "\u{2014} {name} {}\n",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

#[test]
fn known_key_with_bad_signature_rejects_note() {
    let a = signer("a.example");
    let b = signer("b.example");
    let note = sign("hello\n", &[&a]).unwrap();
    let mut parsed = parse(&note).unwrap();
    parsed.signatures[0].signature[10] ^= 1;
    let forged = parsed.encode();
    assert!(err_msg(open(&forged, &[a.verifier()])).contains("does not verify"));

    // A valid log signature does not save a note carrying a bad signature by another known key.
    let with_bad_b = note.clone() + &NoteSignerWithId::line("b.example", b.key_id(), &[5u8; 64]);
    assert!(open(&with_bad_b, &[a.verifier()]).is_ok()); // b unknown here: ignored
    let e = err_msg(open(&with_bad_b, &[a.verifier(), b.verifier()]));
    assert!(
        e.contains("b.example") && e.contains("does not verify"),
        "{e}"
    );

    // A signature by b's name and id over another text does not verify either.
    let other = sign("other\n", &[&b]).unwrap();
    let b_line = other.lines().last().unwrap().to_string() + "\n";
    let spliced = note + &b_line;
    assert!(is_note_err(&open(&spliced, &[a.verifier(), b.verifier()])));
    // Wrong signature length under a known key.
    let short = sign("hello\n", &[&a]).unwrap()
        + &NoteSignerWithId::line("b.example", b.key_id(), &[5u8; 63]);
    assert!(is_note_err(&open(&short, &[a.verifier(), b.verifier()])));
}

#[test]
fn note_signed_by_no_known_key_rejected() {
    let a = signer("a.example");
    let x = signer("x.example");
    let note = sign("hello\n", &[&x]).unwrap();
    let e = err_msg(open(&note, &[a.verifier()]));
    assert!(e.contains("no known key"), "{e}");
    assert!(is_note_err(&open(&note, &[])));
}

#[test]
fn parse_is_strict() {
    let a = signer("a");
    let good = sign("text\n", &[&a]).unwrap();
    let sig_b64 = good.rsplit_once(' ').unwrap().1.trim_end().to_string();
    let bad_notes = [
        "text\n".to_string(),                                  // no blank line, no sig
        "text\n\n".to_string(),                                // no signature
        good.trim_end_matches('\n').to_string(),               // no final newline
        good.replace("\n\n", "\n"),                            // missing blank line
        good.replace('\u{2014}', "-"),                         // hyphen, not em dash
        good.replace("\u{2014} ", "\u{2014}"),                 // no space after dash
        good.replace("\u{2014} a ", "\u{2014} a  "),           // two spaces
        good.replace("\u{2014} a ", "\u{2014}  a "),           // empty name
        good.replace("\u{2014} a ", "\u{2014} a+b "),          // '+' in name
        good.replace(&sig_b64, &sig_b64[..sig_b64.len() - 1]), // truncated base64
        good.replace(&sig_b64, &sig_b64.replace('=', "")),     // no padding
        good.replace(&sig_b64, &format!("{sig_b64} ")),        // trailing space
        good.replace("text\n", "te\rxt\n"),                    // control character
        good.replace("text\n", "text\r\n"),                    // CRLF
        good.replace('\n', "\r\n"),                            // CRLF everywhere
        "text\n\n\u{2014} a AQID\n".to_string(),               // 3 bytes < 5
        "text\n\n\u{2014} a AQIDBA==\n".to_string(),           // key id only
        format!("text\n\n\u{2014} a {sig_b64}\n\n"),           // trailing blank line
        format!("text\n\n\u{2014} a {sig_b64}\nextra\n"),      // junk line
    ];
    for bad in &bad_notes {
        assert!(is_note_err(&parse(bad)), "parse accepted {bad:?}");
        assert!(
            is_note_err(&open(bad, &[a.verifier()])),
            "open accepted {bad:?}"
        );
    }
    // Non-canonical base64 (trailing bits set) is refused even though it decodes.
    let mut chars: Vec<char> = sig_b64.chars().collect();
    let last_data = chars.len() - 2; // 68 bytes -> 92 chars ending in one '='
    assert_eq!(chars[chars.len() - 1], '=');
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let pos = alphabet.find(chars[last_data]).unwrap();
    chars[last_data] = alphabet.chars().nth(pos ^ 1).unwrap();
    let noncanon = good.replace(&sig_b64, &chars.iter().collect::<String>());
    assert!(is_note_err(&parse(&noncanon)));
}

#[test]
fn signature_count_limit() {
    let a = signer("a");
    let mut ok = sign("t\n", &[&a]).unwrap();
    for i in 1..MAX_SIGNATURES {
        ok += &NoteSignerWithId::line(&format!("u{i}"), [0, 0, 0, i as u8], &[0u8; 64]);
    }
    assert_eq!(parse(&ok).unwrap().signatures.len(), MAX_SIGNATURES);
    assert!(open(&ok, &[a.verifier()]).is_ok());
    let too_many = ok + &NoteSignerWithId::line("one-more", [1, 1, 1, 1], &[0u8; 64]);
    assert!(err_msg(parse(&too_many)).contains("at most"));
    // Cosigning cannot push a note over the limit either.
    let b = signer("b");
    let mut at_limit = sign("t\n", &[&a]).unwrap();
    for i in 1..MAX_SIGNATURES {
        at_limit += &NoteSignerWithId::line(&format!("u{i}"), [0, 0, 0, i as u8], &[0u8; 64]);
    }
    assert!(is_note_err(&add_signatures(&at_limit, &[&b])));
}

#[test]
fn add_signatures_appends_and_is_idempotent() {
    let log = signer("log");
    let w1 = signer("w1");
    let w2 = signer("w2");
    let note = sign("payload\n", &[&log]).unwrap();
    let n1 = add_signatures(&note, &[&w1]).unwrap();
    assert!(n1.starts_with(&note));
    let n2 = add_signatures(&n1, &[&w2, &w1]).unwrap();
    assert!(n2.starts_with(&n1));
    assert_eq!(parse(&n2).unwrap().signatures.len(), 3);
    assert_eq!(add_signatures(&n2, &[&w1, &w2, &log]).unwrap(), n2);
    let (_, v) = open(&n2, &[log.verifier(), w1.verifier(), w2.verifier()]).unwrap();
    assert_eq!(v, vec![log.verifier(), w1.verifier(), w2.verifier()]);
    assert!(is_note_err(&add_signatures("not a note\n", &[&w1])));
}

#[test]
fn every_single_byte_mutation_of_signed_checkpoint_rejected() {
    let log = signer(ORIGIN);
    let w = signer("hospital-a.example/witness");
    let cp = Checkpoint {
        extensions: vec!["round 7".into()],
        ..checkpoint(ORIGIN, &leaves(13, "mut"))
    };
    let note = add_signatures(&cp.sign(&[&log]).unwrap(), &[&w]).unwrap();
    let known = [log.verifier(), w.verifier()];
    assert!(open(&note, &known).is_ok());
    let bytes = note.as_bytes();
    // The text and the blank line after it: any change there must be refused.
    let guarded = cp.to_text().len() + 1;
    let mut tried = 0;
    let check = |m: Vec<u8>, what: &str| -> bool {
        let Ok(m) = String::from_utf8(m) else {
            return false;
        };
        let r = open(&m, &known);
        assert!(is_note_err(&r), "{what} accepted: {m:?}");
        true
    };
    for i in 0..guarded {
        for x in 1..=255u8 {
            let mut m = bytes.to_vec();
            m[i] ^= x;
            tried += check(m, &format!("xor {x:#04x} at byte {i}")) as usize;
        }
        let mut d = bytes.to_vec();
        d.remove(i);
        check(d, &format!("deletion at byte {i}"));
        for ins in [b'0', b'A', b'\n', b' ', b'=', b'+'] {
            let mut d = bytes.to_vec();
            d.insert(i, ins);
            check(d, &format!("insertion of {ins:#04x} at byte {i}"));
        }
    }
    assert!(tried > 5_000, "{tried}");
    // In the signature lines a change may only drop a signature (a renamed key is unknown, so
    // ignored); it never makes a different text open, and never adds a verified key.
    for i in guarded..bytes.len() {
        for x in 1..=255u8 {
            let mut m = bytes.to_vec();
            m[i] ^= x;
            let Ok(m) = String::from_utf8(m) else {
                continue;
            };
            if let Ok((n, v)) = open(&m, &known) {
                assert_eq!(n.text, cp.to_text(), "byte {i}");
                assert!(v.len() == 1, "byte {i}: {m:?}");
            }
        }
    }
    // The guarded text is the checkpoint itself.
    assert_eq!(Checkpoint::from_text(&cp.to_text()).unwrap(), cp);
}

// ---------------------------------------------------------------------------------------------
// Checkpoints

proptest! {
    #[test]
    fn checkpoint_text_round_trip(
        origin in "[a-zA-Z0-9./_-]{1,40}",
        size in any::<u64>(),
        root in any::<[u8; 32]>(),
        extensions in proptest::collection::vec("[ -~]{1,30}", 0..4),
    ) {
        let cp = Checkpoint { origin, size, root, extensions };
        cp.validate().unwrap();
        let text = cp.to_text();
        prop_assert_eq!(Checkpoint::from_text(&text).unwrap(), cp.clone());
        let log = signer("log");
        let note = cp.sign(&[&log]).unwrap();
        let (signed, _) = open(&note, &[log.verifier()]).unwrap();
        prop_assert_eq!(signed.text, text);
    }

    #[test]
    fn parsers_never_panic(s in "\\PC{0,200}", t in "[\u{2014} a-zA-Z0-9+/=\n]{0,200}") {
        let v = signer("a").verifier();
        for input in [&s, &t] {
            let _ = parse(input);
            let _ = open(input, std::slice::from_ref(&v));
            let _ = Checkpoint::from_text(input);
            let _ = NoteVerifier::from_vkey(input);
            let _ = NoteSigner::from_skey(input);
            let _ = quorum(input, &v, &[], 0);
        }
    }
}

#[test]
fn checkpoint_to_text_format() {
    let cp = Checkpoint {
        origin: "example.com/behind-the-sofa".into(),
        size: 20852163,
        root: [0u8; 32],
        extensions: vec!["ext one".into()],
    };
    assert_eq!(
        cp.to_text(),
        "example.com/behind-the-sofa\n20852163\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\next one\n"
    );
    // The C2SP tlog-checkpoint example parses.
    let c2sp =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    let cp = Checkpoint::from_text(c2sp).unwrap();
    assert_eq!(cp.size, 20852163);
    assert_eq!(cp.to_text(), c2sp);
    // Invalid fields are caught before signing.
    let bad = Checkpoint {
        origin: "a\nb".into(),
        size: 1,
        root: [0; 32],
        extensions: vec![],
    };
    assert!(bad.validate().is_err());
    assert!(bad.sign(&[&signer("log")]).is_err());
    let bad = Checkpoint {
        origin: "a".into(),
        size: 1,
        root: [0; 32],
        extensions: vec!["".into()],
    };
    assert!(bad.validate().is_err());
}

#[test]
fn checkpoint_parsing_is_strict() {
    let root = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=";
    let ok = |size: &str| format!("o\n{size}\n{root}\n");
    assert_eq!(Checkpoint::from_text(&ok("0")).unwrap().size, 0);
    assert_eq!(
        Checkpoint::from_text(&ok("18446744073709551615"))
            .unwrap()
            .size,
        u64::MAX
    );
    for size in [
        "00",
        "01",
        "007",
        "+1",
        "-1",
        " 1",
        "1 ",
        "1.0",
        "0x10",
        "",
        "1e3",
        "18446744073709551616",
        "١",
    ] {
        assert!(
            is_note_err(&Checkpoint::from_text(&ok(size))),
            "size {size:?}"
        );
    }
    let thirty_one = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";
    let thirty_three = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let non_canonical = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=";
    for bad in [
        format!("o\n1\n{thirty_one}\n"),
        format!("o\n1\n{thirty_three}\n"),
        format!("o\n1\n{non_canonical}\n"),
        format!("o\n1\n{}\n", &root[..43]), // no padding
        format!("o\n1\n{}\n", root.replace('/', "_")), // URL alphabet
        format!("o\n1\n {root}\n"),
        "o\n1\nnot base64!\n".to_string(),
        format!("o\n1\n{root}"),                // no final newline
        format!("\n1\n{root}\n"),               // empty origin
        format!("o\n1\n{root}\n\n"),            // empty extension line
        format!("o\n1\n{root}\next\n\nmore\n"), // empty line among extensions
        "o\n1\n".to_string(),                   // missing root
        "o\n".to_string(),                      // missing size and root
        String::new(),
        format!("o\r\n1\n{root}\n"),        // CR
        format!("o\n1\n{root}\nex\ttab\n"), // control char
    ] {
        assert!(
            is_note_err(&Checkpoint::from_text(&bad)),
            "accepted {bad:?}"
        );
    }
    let with_ext = Checkpoint::from_text(&format!("o\n5\n{root}\nfirst ext\nsecond\n")).unwrap();
    assert_eq!(with_ext.extensions, vec!["first ext", "second"]);
}

// ---------------------------------------------------------------------------------------------
// Quorum

struct Consortium {
    log: NoteSigner,
    witnesses: Vec<NoteSigner>,
}

fn consortium() -> Consortium {
    Consortium {
        log: signer(ORIGIN),
        witnesses: (0..3)
            .map(|i| signer(&format!("hospital-{i}.example/witness")))
            .collect(),
    }
}

impl Consortium {
    fn verifiers(&self) -> Vec<NoteVerifier> {
        self.witnesses.iter().map(|w| w.verifier()).collect()
    }
}

#[test]
fn quorum_counts_distinct_valid_witnesses() {
    let c = consortium();
    let cp = checkpoint(ORIGIN, &leaves(5, "q"));
    let signed = cp.sign(&[&c.log]).unwrap();
    let ws = c.verifiers();
    let lv = c.log.verifier();

    // Threshold 0: the log's signature alone.
    let (got, names) = quorum(&signed, &lv, &ws, 0).unwrap();
    assert_eq!(got, cp);
    assert!(names.is_empty());
    let e = err_msg(quorum(&signed, &lv, &ws, 1));
    assert!(e.contains("0 of 3"), "{e}");

    let two = add_signatures(&signed, &[&c.witnesses[0], &c.witnesses[2]]).unwrap();
    let (got, names) = quorum(&two, &lv, &ws, 2).unwrap();
    assert_eq!(got, cp);
    assert_eq!(
        names,
        vec!["hospital-0.example/witness", "hospital-2.example/witness"]
    );
    let e = err_msg(quorum(&two, &lv, &ws, 3));
    assert!(e.contains("2 of 3") && e.contains("3 required"), "{e}");

    // Duplicate cosignature lines by one witness count once.
    let w0_line = add_signatures(&signed, &[&c.witnesses[0]])
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string()
        + "\n";
    let dup = signed.clone() + &w0_line + &w0_line + &w0_line;
    assert_eq!(parse(&dup).unwrap().signatures.len(), 4);
    assert_eq!(quorum(&dup, &lv, &ws, 1).unwrap().1.len(), 1);
    assert!(err_msg(quorum(&dup, &lv, &ws, 2)).contains("1 of 3"));

    // One key registered under two witness names counts once (Ed25519 note signatures do not
    // commit to the name).
    let alias = NoteSigner::new(
        "alias.example/witness",
        sha256(b"test secret for hospital-0.example/witness"),
    )
    .unwrap();
    let mut ws_alias = ws.clone();
    ws_alias.push(alias.verifier());
    let aliased = add_signatures(&signed, &[&c.witnesses[0], &alias]).unwrap();
    assert_eq!(quorum(&aliased, &lv, &ws_alias, 1).unwrap().1.len(), 1);
    assert!(err_msg(quorum(&aliased, &lv, &ws_alias, 2)).contains("1 of 3"));

    // A cosignature by a non-witness is ignored.
    let stranger = signer("stranger.example/witness");
    let with_stranger = add_signatures(&signed, &[&stranger, &c.witnesses[1]]).unwrap();
    let (_, names) = quorum(&with_stranger, &lv, &ws, 1).unwrap();
    assert_eq!(names, vec!["hospital-1.example/witness"]);
    assert!(is_note_err(&quorum(&with_stranger, &lv, &ws, 2)));

    // The log listed as a witness does not cosign for itself.
    let mut ws_log = ws.clone();
    ws_log.push(lv.clone());
    assert!(is_note_err(&quorum(&signed, &lv, &ws_log, 1)));
}

#[test]
fn quorum_requires_valid_log_signature_and_checkpoint() {
    let c = consortium();
    let ws = c.verifiers();
    let lv = c.log.verifier();
    let cp = checkpoint(ORIGIN, &leaves(3, "q"));

    // Cosigned by all witnesses, but not by the log.
    let no_log = cp
        .sign(&[&c.witnesses[0], &c.witnesses[1], &c.witnesses[2]])
        .unwrap();
    let e = err_msg(quorum(&no_log, &lv, &ws, 1));
    assert!(e.contains("not signed by the log"), "{e}");

    // Another log's key under the log's name.
    let impostor = NoteSigner::new(ORIGIN, [42; 32]).unwrap();
    let fake = add_signatures(&cp.sign(&[&impostor]).unwrap(), &[&c.witnesses[0]]).unwrap();
    assert!(is_note_err(&quorum(&fake, &lv, &ws, 1)));

    // A bad cosignature by a configured witness rejects the note.
    let good = add_signatures(&cp.sign(&[&c.log]).unwrap(), &[&c.witnesses[0]]).unwrap();
    let bad = good.clone()
        + &NoteSignerWithId::line(c.witnesses[1].name(), c.witnesses[1].key_id(), &[1; 64]);
    assert!(is_note_err(&quorum(&bad, &lv, &ws, 1)));

    // Signed text that is not a checkpoint.
    let not_cp = add_signatures(&sign("hello\n", &[&c.log]).unwrap(), &[&c.witnesses[0]]).unwrap();
    assert!(is_note_err(&quorum(&not_cp, &lv, &ws, 1)));
    assert!(quorum(&good, &lv, &ws, 1).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Witness

fn state_of(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

struct Setup {
    c: Consortium,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            c: consortium(),
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("witness-state")
    }
    fn witness(&self) -> Witness {
        Witness::open(
            self.c.witnesses[0].clone(),
            self.c.log.verifier(),
            &self.path(),
        )
        .unwrap()
    }
    fn signed(&self, cp: &Checkpoint) -> String {
        cp.sign(&[&self.c.log]).unwrap()
    }
}

#[test]
fn witness_accepts_first_then_extensions_with_valid_proofs() {
    let s = Setup::new();
    let mut w = s.witness();
    assert!(w.last().is_none());
    let all = leaves(70, "grow");

    let first = checkpoint(ORIGIN, &all[..3]);
    let cosigned = w.cosign(&s.signed(&first), &[]).unwrap();
    assert_eq!(w.last(), Some(&first));
    // The state is the cosigned note itself: what the log signed, with this witness's line.
    assert_eq!(state_of(&s.path()).unwrap(), cosigned);
    assert_eq!(w.last_note(), Some(cosigned.as_str()));
    let (got, names) = quorum(&cosigned, &s.c.log.verifier(), &s.c.verifiers(), 1).unwrap();
    assert_eq!(got, first);
    assert_eq!(names, vec![s.c.witnesses[0].name()]);
    assert!(cosigned.starts_with(&s.signed(&first)));

    let mut prev = 3;
    for size in [4, 5, 8, 9, 16, 17, 31, 32, 33, 64, 70] {
        let cp = checkpoint(ORIGIN, &all[..size]);
        let proof = consistency_proof(prev, &all[..size]);
        let out = w
            .cosign(&s.signed(&cp), &proof)
            .unwrap_or_else(|e| panic!("{prev} -> {size}: {e}"));
        assert!(quorum(&out, &s.c.log.verifier(), &s.c.verifiers(), 1).is_ok());
        assert_eq!(w.last(), Some(&cp));
        assert_eq!(state_of(&s.path()).unwrap(), out);
        prev = size;
    }

    // Re-presenting the same checkpoint (a retry) is accepted, whatever proof comes with it.
    let same = checkpoint(ORIGIN, &all[..70]);
    assert!(w.cosign(&s.signed(&same), &[]).is_ok());
    assert!(w.cosign(&s.signed(&same), &[[7; 32]]).is_ok());
    // Extension lines may change at the same size and root.
    let mut ext = same.clone();
    ext.extensions = vec!["round 12".into()];
    assert!(w.cosign(&s.signed(&ext), &[]).is_ok());
    assert_eq!(w.last(), Some(&ext));

    // Cosigning an already cosigned note (by others) adds one line.
    let other = Witness::open(
        s.c.witnesses[1].clone(),
        s.c.log.verifier(),
        &s.dir.path().join("other"),
    )
    .unwrap();
    let mut other = other;
    let both = other
        .cosign(&w.cosign(&s.signed(&ext), &[]).unwrap(), &[])
        .unwrap();
    let (_, names) = quorum(&both, &s.c.log.verifier(), &s.c.verifiers(), 2).unwrap();
    assert_eq!(names.len(), 2);

    // No temporary file left behind.
    let files: Vec<String> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
}

/// Runs `bad` against a witness at `base` and checks it is refused with an error matching
/// `is_expected`, leaving memory and disk state unchanged.
fn assert_refused(
    s: &Setup,
    w: &mut Witness,
    bad: &str,
    proof: &[Hash],
    is_expected: fn(&LedgerError) -> bool,
    needle: &str,
) {
    let before_disk = state_of(&s.path());
    let before_mem = w.last().cloned();
    let e = w
        .cosign(bad, proof)
        .expect_err("cosign accepted a bad checkpoint");
    assert!(is_expected(&e), "unexpected error kind: {e:?}");
    assert!(e.to_string().contains(needle), "{e} lacks {needle:?}");
    assert_eq!(state_of(&s.path()), before_disk);
    assert_eq!(w.last().cloned(), before_mem);
    let reopened = Witness::open(s.c.witnesses[0].clone(), s.c.log.verifier(), &s.path()).unwrap();
    assert_eq!(reopened.last().cloned(), before_mem);
}

fn inconsistent(e: &LedgerError) -> bool {
    matches!(e, LedgerError::Inconsistent(_))
}

fn note_error(e: &LedgerError) -> bool {
    matches!(e, LedgerError::Note(_))
}

#[test]
fn witness_rejects_rollback_fork_bad_proofs_and_foreign_notes() {
    let s = Setup::new();
    let mut w = s.witness();
    let all = leaves(40, "main");
    let fork = leaves(40, "fork");
    w.cosign(&s.signed(&checkpoint(ORIGIN, &all[..10])), &[])
        .unwrap();
    w.cosign(
        &s.signed(&checkpoint(ORIGIN, &all[..20])),
        &consistency_proof(10, &all[..20]),
    )
    .unwrap();

    // Rollback to a smaller tree, even a genuine prefix.
    let small = s.signed(&checkpoint(ORIGIN, &all[..10]));
    assert_refused(&s, &mut w, &small, &[], inconsistent, "rollback");
    assert_refused(
        &s,
        &mut w,
        &small,
        &[],
        inconsistent,
        "smaller than the last cosigned size 20",
    );

    // A different root at the same size.
    let mut forked: Vec<Hash> = all[..20].to_vec();
    forked[19] = fork[19];
    let same_size = s.signed(&checkpoint(ORIGIN, &forked));
    assert_refused(&s, &mut w, &same_size, &[], inconsistent, "fork");

    // A larger tree that does not extend ours: no valid proof exists.
    let mut other: Vec<Hash> = all[..30].to_vec();
    other[5] = fork[5];
    let divergent = s.signed(&checkpoint(ORIGIN, &other));
    let proof = consistency_proof(20, &other);
    assert_refused(
        &s,
        &mut w,
        &divergent,
        &proof,
        inconsistent,
        "consistency proof",
    );

    // The right tree with broken proofs.
    let next = s.signed(&checkpoint(ORIGIN, &all[..30]));
    let good = consistency_proof(20, &all[..30]);
    assert_refused(&s, &mut w, &next, &[], inconsistent, "size 20");
    for i in 0..good.len() {
        let mut p = good.clone();
        p[i][0] ^= 1;
        assert_refused(&s, &mut w, &next, &p, inconsistent, "does not verify");
    }
    assert_refused(
        &s,
        &mut w,
        &next,
        &good[..good.len() - 1],
        inconsistent,
        "does not verify",
    );
    let mut longer = good.clone();
    longer.push([0; 32]);
    assert_refused(&s, &mut w, &next, &longer, inconsistent, "does not verify");
    let wrong_from = consistency_proof(19, &all[..30]);
    assert_refused(
        &s,
        &mut w,
        &next,
        &wrong_from,
        inconsistent,
        "does not verify",
    );

    // Not signed by the log: another key, even under the log's name.
    let cp30 = checkpoint(ORIGIN, &all[..30]);
    let impostor = NoteSigner::new(ORIGIN, [3; 32]).unwrap();
    assert_refused(
        &s,
        &mut w,
        &cp30.sign(&[&impostor]).unwrap(),
        &good,
        note_error,
        "not signed by the log",
    );
    let by_witness_only = cp30.sign(&[&s.c.witnesses[0]]).unwrap();
    assert_refused(
        &s,
        &mut w,
        &by_witness_only,
        &good,
        note_error,
        "not signed by the log",
    );
    // The log's signature broken.
    let mut broken = parse(&next).unwrap();
    broken.signatures[0].signature[0] ^= 0x80;
    assert_refused(
        &s,
        &mut w,
        &broken.encode(),
        &good,
        note_error,
        "does not verify",
    );
    // A forged line under this witness's own key.
    let forged_own = next.clone()
        + &NoteSignerWithId::line(s.c.witnesses[0].name(), s.c.witnesses[0].key_id(), &[9; 64]);
    assert_refused(
        &s,
        &mut w,
        &forged_own,
        &good,
        note_error,
        "does not verify",
    );
    // Log-signed text that is not a checkpoint.
    assert_refused(
        &s,
        &mut w,
        &sign("hello\n", &[&s.c.log]).unwrap(),
        &good,
        note_error,
        "checkpoint",
    );

    // Another origin, even with the right tree, size and proof.
    let mut elsewhere = cp30.clone();
    elsewhere.origin = "other.example/log".into();
    assert_refused(
        &s,
        &mut w,
        &s.signed(&elsewhere),
        &good,
        inconsistent,
        "origin",
    );

    // After all that, the genuine extension is still accepted.
    w.cosign(&next, &good).unwrap();
    assert_eq!(w.last().unwrap().size, 30);
}

#[test]
fn witness_state_survives_reopen() {
    let s = Setup::new();
    let all = leaves(25, "persist");
    let cp10 = checkpoint(ORIGIN, &all[..10]);
    {
        let mut w = s.witness();
        w.cosign(&s.signed(&cp10), &[]).unwrap();
    }
    let mut w = s.witness();
    assert_eq!(w.last(), Some(&cp10));
    // The reopened witness still refuses rollback and forks and needs a proof from size 10.
    let cp5 = checkpoint(ORIGIN, &all[..5]);
    assert!(matches!(
        w.cosign(&s.signed(&cp5), &[]),
        Err(LedgerError::Inconsistent(_))
    ));
    let mut forked = all[..10].to_vec();
    forked[0] = leaf(b"other");
    let r = w.cosign(&s.signed(&checkpoint(ORIGIN, &forked)), &[]);
    assert!(matches!(r, Err(LedgerError::Inconsistent(_))));
    let cp25 = checkpoint(ORIGIN, &all);
    assert!(matches!(
        w.cosign(&s.signed(&cp25), &consistency_proof(9, &all)),
        Err(LedgerError::Inconsistent(_))
    ));
    w.cosign(&s.signed(&cp25), &consistency_proof(10, &all))
        .unwrap();
    drop(w);
    let reopened = s.witness();
    assert_eq!(reopened.last(), Some(&cp25));
    let kept = state_of(&s.path()).unwrap();
    assert_eq!(reopened.last_note(), Some(kept.as_str()));
    assert_eq!(checkpoint_in(&kept).unwrap(), cp25);
    assert!(quorum(&kept, &s.c.log.verifier(), &s.c.verifiers(), 1).is_ok());
}

#[test]
fn witness_state_of_earlier_versions_and_forged_notes() {
    let s = Setup::new();
    let all = leaves(12, "legacy");
    // Before notes were kept, the state file held the bare checkpoint text: still accepted, with
    // no note to show.
    let cp8 = checkpoint(ORIGIN, &all[..8]);
    std::fs::write(s.path(), cp8.to_text()).unwrap();
    let mut w = s.witness();
    assert_eq!(w.last(), Some(&cp8));
    assert_eq!(w.last_note(), None);
    assert_eq!(checkpoint_in(&cp8.to_text()).unwrap(), cp8);
    let cp12 = checkpoint(ORIGIN, &all);
    let out = w
        .cosign(&s.signed(&cp12), &consistency_proof(8, &all))
        .unwrap();
    assert_eq!(w.last_note(), Some(out.as_str()));

    // A state note the log did not sign is damage (or a forgery), never evidence.
    let forged = cp12.sign(&[&s.c.witnesses[1]]).unwrap();
    std::fs::write(s.path(), forged).unwrap();
    let e = Witness::open(s.c.witnesses[0].clone(), s.c.log.verifier(), &s.path()).unwrap_err();
    assert!(matches!(e, LedgerError::Corrupt(_)), "{e:?}");
}

#[test]
fn witness_empty_tree_and_configuration_errors() {
    let s = Setup::new();
    let mut w = s.witness();
    let empty = Checkpoint {
        origin: ORIGIN.into(),
        size: 0,
        root: [1; 32],
        extensions: vec![],
    };
    assert!(matches!(
        w.cosign(&s.signed(&empty), &[]),
        Err(LedgerError::Inconsistent(_))
    ));
    assert!(w.last().is_none());
    assert!(state_of(&s.path()).is_none());
    let empty = checkpoint(ORIGIN, &[]);
    assert_eq!(empty.root, sha256(b""));
    w.cosign(&s.signed(&empty), &[]).unwrap();
    // Everything extends the empty tree.
    let all = leaves(6, "e");
    w.cosign(&s.signed(&checkpoint(ORIGIN, &all)), &[]).unwrap();
    assert_eq!(w.last().unwrap().size, 6);

    // A witness must not use the log's key; the state path needs a file name.
    assert!(Witness::open(s.c.log.clone(), s.c.log.verifier(), &s.path()).is_err());
    assert!(Witness::open(s.c.witnesses[0].clone(), s.c.log.verifier(), Path::new("/")).is_err());

    // A damaged state file is reported, not silently replaced.
    std::fs::write(s.path(), "garbage\n").unwrap();
    let e = Witness::open(s.c.witnesses[0].clone(), s.c.log.verifier(), &s.path()).unwrap_err();
    assert!(matches!(e, LedgerError::Corrupt(_)), "{e:?}");

    // A state path in a missing directory: cosign fails with an I/O error naming the path.
    let missing = s.dir.path().join("no-such-dir").join("state");
    let mut w = Witness::open(s.c.witnesses[0].clone(), s.c.log.verifier(), &missing).unwrap();
    let e = w.cosign(&s.signed(&empty), &[]).unwrap_err();
    assert!(matches!(e, LedgerError::Io { .. }), "{e:?}");
    assert!(w.last().is_none());
}

#[test]
fn witness_with_the_merkle_modules_proofs() {
    // The same walk with roots and proofs from `fedchain_ledger::merkle`, checked against the
    // independent RFC 6962 helper above.
    use fedchain_ledger::merkle;
    let s = Setup::new();
    let mut w = s.witness();
    let all = leaves(50, "real");
    let mut prev = 0u64;
    for size in [1u64, 2, 3, 7, 8, 12, 32, 33, 50] {
        let n = size as usize;
        assert_eq!(merkle::root(&all[..n]), mth(&all[..n]));
        let cp = checkpoint(ORIGIN, &all[..n]);
        let proof = if prev == 0 {
            vec![]
        } else {
            let p = merkle::consistency_proof(&all, prev, size).unwrap();
            assert_eq!(p, consistency_proof(prev as usize, &all[..n]));
            p
        };
        w.cosign(&s.signed(&cp), &proof).unwrap();
        prev = size;
    }
    assert_eq!(w.last().unwrap().size, 50);
}
