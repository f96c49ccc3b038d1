//! The threshold key ceremony and share checks through the binary, and the crypto benchmark
//! command. 512-bit keys keep these fast; the ceremony's maths does not depend on the size.

use crate::util::{failed_stderr, fedchain, json, ok_stdout};

#[test]
fn ceremony_writes_public_key_and_owner_only_shares_that_check() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keys");
    let o = out.to_str().unwrap();
    let report = json(&fedchain(&[
        "keys",
        "deal",
        "--parties",
        "3",
        "--threshold",
        "2",
        "--bits",
        "512",
        "--out",
        o,
        "--json",
    ]));
    assert_eq!(report["modulus_bits"], 512);
    assert_eq!(report["files"].as_array().unwrap().len(), 4);
    for i in 1..=3 {
        let share = out.join(format!("share-{i}.key"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&share).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "share {i}");
        }
        let text = ok_stdout(&fedchain(&[
            "keys",
            "check",
            "--public",
            &format!("{o}/public.key"),
            "--share",
            share.to_str().unwrap(),
        ]));
        assert!(text.contains(&format!("party {i}'s share")), "{text}");
    }
    // Never overwrite a ceremony.
    let err = failed_stderr(
        &fedchain(&[
            "keys",
            "deal",
            "--parties",
            "3",
            "--threshold",
            "2",
            "--bits",
            "512",
            "--out",
            o,
        ]),
        1,
    );
    assert!(err.contains("already there"), "{err}");

    // A share of another key, and a corrupted share, fail the check with exit 1.
    let other = dir.path().join("other");
    ok_stdout(&fedchain(&[
        "keys",
        "deal",
        "--parties",
        "2",
        "--threshold",
        "1",
        "--bits",
        "512",
        "--out",
        other.to_str().unwrap(),
    ]));
    let err = failed_stderr(
        &fedchain(&[
            "keys",
            "check",
            "--public",
            &format!("{o}/public.key"),
            "--share",
            other.join("share-1.key").to_str().unwrap(),
        ]),
        1,
    );
    assert!(err.contains("another public key"), "{err}");
    let share = out.join("share-2.key");
    let mut bytes = std::fs::read(&share).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, bytes).unwrap();
    let err = failed_stderr(
        &fedchain(&[
            "keys",
            "check",
            "--public",
            &format!("{o}/public.key"),
            "--share",
            bad.to_str().unwrap(),
        ]),
        1,
    );
    assert!(
        err.contains("does not match its public verification key"),
        "{err}"
    );
}

#[test]
fn bad_ceremony_parameters_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let o = dir.path().to_str().unwrap();
    let err = failed_stderr(
        &fedchain(&[
            "keys",
            "deal",
            "--parties",
            "3",
            "--threshold",
            "4",
            "--out",
            o,
        ]),
        1,
    );
    assert!(err.contains("threshold"), "{err}");
    let err = failed_stderr(
        &fedchain(&[
            "keys",
            "deal",
            "--parties",
            "3",
            "--threshold",
            "2",
            "--bits",
            "1001",
            "--out",
            o,
        ]),
        1,
    );
    assert!(err.contains("2048"), "{err}");
}

#[test]
fn crypto_benchmark_reports_every_figure() {
    let r = json(&fedchain(&[
        "bench",
        "crypto",
        "--bits",
        "512",
        "--values",
        "2000",
        "--decrypt",
        "4",
        "--json",
    ]));
    for key in [
        "key_ceremony_ms_wall",
        "naive_encrypt_us_per_value",
        "packed_encrypt_us_per_value",
        "add_us_per_ciphertext",
        "partial_decrypt_us_per_ciphertext",
        "verify_us_per_ciphertext",
        "combine_us_per_ciphertext",
        "packed_bytes_per_value",
    ] {
        assert!(r[key].as_f64().unwrap() > 0.0, "{key}: {r}");
    }
    // Packing puts many values in each ciphertext: far fewer bytes per value than one each.
    assert!(
        r["packed_bytes_per_value"].as_f64().unwrap() * 10.0
            < r["naive_bytes_per_value"].as_f64().unwrap()
    );
}
