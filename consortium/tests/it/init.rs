//! `consortium::init`: the files it writes, their modes, what they hold, and what it refuses.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use fedchain_consortium::tls::{peer_from_der, Peer, Role};
use fedchain_consortium::{init, Consortium, ConsortiumError, InitOptions, DESCRIPTION_FILE};
use fedchain_crypto::keys::{KeyShare, PublicKey};
use fedchain_ledger::note::{NoteSigner, NoteVerifier};
use fedchain_ledger::verify::Trust;
use x509_parser::extensions::GeneralName;

use crate::util::{consortium, names, small};

const HOSPITALS: [&str; 3] = ["st-marys", "general", "childrens"];

/// Every entry under `root`: relative path -> (is a folder, permission bits).
fn tree(root: &Path) -> BTreeMap<String, (bool, u32)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (bool, u32)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert!(!meta.file_type().is_symlink(), "{}", path.display());
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.insert(rel, (meta.is_dir(), meta.permissions().mode() & 0o7777));
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The documented layout: relative path -> Some(secret?) for files, None for folders.
fn expected_layout(
    hospitals: &[&str],
    researchers: &[&str],
    auditors: &[&str],
) -> BTreeMap<String, Option<bool>> {
    let mut e = BTreeMap::new();
    let mut dir = |p: &str| e.insert(p.to_string(), None);
    for d in ["ca", "coordinator", "hospitals", "researchers", "auditors"] {
        dir(d);
    }
    for h in hospitals {
        dir(&format!("hospitals/{h}"));
    }
    for r in researchers {
        dir(&format!("researchers/{r}"));
    }
    for a in auditors {
        dir(&format!("auditors/{a}"));
    }
    let mut file = |p: String, secret: bool| e.insert(p, Some(secret));
    file("consortium.json".into(), false);
    file("trust.txt".into(), false);
    file("ca/ca.pem".into(), false);
    file("ca/ca.key".into(), true);
    for (f, secret) in [
        ("ca.pem", false),
        ("coordinator.pem", false),
        ("coordinator.key", true),
        ("log.skey", true),
        ("log.vkey", false),
        ("public.key", false),
        ("consortium.json", false),
        ("trust.txt", false),
    ] {
        file(format!("coordinator/{f}"), secret);
    }
    for h in hospitals {
        for (f, secret) in [
            ("ca.pem".to_string(), false),
            (format!("{h}.pem"), false),
            (format!("{h}.key"), true),
            ("identity.skey".into(), true),
            ("identity.vkey".into(), false),
            ("share.key".into(), true),
            ("public.key".into(), false),
            ("log.vkey".into(), false),
            ("consortium.json".into(), false),
            ("trust.txt".into(), false),
        ] {
            file(format!("hospitals/{h}/{f}"), secret);
        }
    }
    for (group, who) in [("researchers", researchers), ("auditors", auditors)] {
        for n in who {
            file(format!("{group}/{n}/ca.pem"), false);
            file(format!("{group}/{n}/{n}.pem"), false);
            file(format!("{group}/{n}/{n}.key"), true);
            file(format!("{group}/{n}/trust.txt"), false);
            file(format!("{group}/{n}/consortium.json"), false);
            file(format!("{group}/{n}/public.key"), false);
        }
    }
    e
}

#[test]
fn init_writes_exactly_the_documented_files_with_their_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new/consortium");
    let options = InitOptions {
        researchers: names(&["lab-a", "lab-b"]),
        auditors: names(&["regulator"]),
        ..small()
    };
    init(&dir, &names(&HOSPITALS), 2, &options).unwrap();

    let actual = tree(&dir);
    let expected = expected_layout(&HOSPITALS, &["lab-a", "lab-b"], &["regulator"]);
    assert_eq!(
        actual.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the layout differs from the documented one"
    );
    for (path, kind) in &expected {
        let (is_dir, mode) = actual[path];
        match kind {
            None => {
                assert!(is_dir, "{path} should be a folder");
                assert_eq!(mode, 0o700, "{path}: folders are owner-only");
            }
            Some(true) => {
                assert!(!is_dir, "{path}");
                assert_eq!(mode, 0o600, "{path} is a secret and must be owner-only");
            }
            Some(false) => {
                assert!(!is_dir, "{path}");
                assert_eq!(mode & 0o600, 0o600, "{path}: owner can read and write");
                assert_eq!(mode & 0o022, 0, "{path}: nobody else may write");
            }
        }
    }
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // No secret leaves its party's folder: each secret file's contents appear exactly once in the
    // whole tree (so no hospital holds another's share or key, nobody but ca/ holds the CA key).
    let mut contents: HashMap<Vec<u8>, Vec<&String>> = HashMap::new();
    for (path, (is_dir, _)) in &actual {
        if !is_dir {
            contents
                .entry(std::fs::read(dir.join(path)).unwrap())
                .or_default()
                .push(path);
        }
    }
    for (path, kind) in &expected {
        if *kind == Some(true) {
            let bytes = std::fs::read(dir.join(path)).unwrap();
            assert_eq!(
                contents[&bytes],
                vec![path],
                "secret {path} is copied elsewhere"
            );
        }
    }
    for path in actual.keys() {
        let name = Path::new(path).file_name().unwrap().to_str().unwrap();
        if name == "ca.key" {
            assert_eq!(path, "ca/ca.key");
        }
        if name == "share.key" || name == "identity.skey" {
            assert!(path.starts_with("hospitals/"), "{path}");
        }
        if name == "log.skey" {
            assert_eq!(path, "coordinator/log.skey");
        }
    }
}

#[test]
fn shares_verify_against_the_public_key_and_the_description() {
    let tmp = tempfile::tempdir().unwrap();
    let c = consortium(&tmp.path().join("c"), &HOSPITALS, 2);
    let pk = PublicKey::load(&c.coordinator_dir().join("public.key")).unwrap();
    assert_eq!(pk.parties(), 3);
    assert_eq!(pk.threshold(), 2);
    assert_eq!(pk.modulus_bits(), 512);
    assert_eq!(hex::encode(pk.digest()), c.description.public_key_sha256);
    assert_eq!(c.description.modulus_bits, 512);
    assert_eq!(c.description.threshold, 2);

    let hospitals: Vec<_> = c.description.hospitals().collect();
    assert_eq!(
        hospitals
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>(),
        HOSPITALS
    );
    for (i, h) in hospitals.iter().enumerate() {
        let hdir = c.hospital_dir(&h.name);
        let own_pk = PublicKey::load(&hdir.join("public.key")).unwrap();
        assert_eq!(own_pk, pk);
        let share = KeyShare::load(&hdir.join("share.key")).unwrap();
        share.verify(&pk).unwrap();
        assert_eq!(share.index(), i + 1);
        assert_eq!(h.index, Some(i + 1));
        // A share does not verify as another index: the folders are not interchangeable.
        let other = KeyShare::load(
            &c.hospital_dir(&hospitals[(i + 1) % 3].name)
                .join("share.key"),
        )
        .unwrap();
        assert_ne!(other.index(), share.index());
    }

    // What was written is what `load` reads back.
    assert_eq!(Consortium::load(&c.dir).unwrap(), c);
}

#[test]
fn note_keys_and_trust_file_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let c = consortium(&tmp.path().join("c"), &HOSPITALS, 2);
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();

    let log = NoteSigner::from_skey(read(c.coordinator_dir().join("log.skey")).trim()).unwrap();
    let log_vkey = read(c.coordinator_dir().join("log.vkey"));
    assert_eq!(log_vkey, format!("{}\n", log.verifier().to_vkey()));
    assert_eq!(log.name(), InitOptions::default().log_name);
    assert_eq!(c.description.log_vkey, log_vkey.trim());

    let trust_text = read(c.dir.join("trust.txt"));
    let trust = Trust::parse(&trust_text).unwrap();
    assert_eq!(trust.log, log.verifier());
    assert_eq!(trust.quorum, 2);
    assert_eq!(trust.witnesses.len(), 3);
    for (h, witness) in c.description.hospitals().zip(&trust.witnesses) {
        let hdir = c.hospital_dir(&h.name);
        let signer = NoteSigner::from_skey(read(hdir.join("identity.skey")).trim()).unwrap();
        assert_eq!(signer.name(), h.name);
        assert_eq!(&signer.verifier(), witness);
        let vkey = read(hdir.join("identity.vkey"));
        assert_eq!(
            NoteVerifier::from_vkey(vkey.trim()).unwrap(),
            signer.verifier()
        );
        assert_eq!(h.identity_vkey.as_deref(), Some(vkey.trim()));
        // Witnesses need the log's key to check what they cosign.
        assert_eq!(read(hdir.join("log.vkey")), log_vkey);
    }
    assert_eq!(read(c.auditor_dir("auditor").join("trust.txt")), trust_text);
}

fn pem_der(path: &Path) -> Vec<u8> {
    let pem = std::fs::read(path).unwrap();
    x509_parser::pem::parse_x509_pem(&pem).unwrap().1.contents
}

#[test]
fn certificates_chain_to_the_ca_and_name_role_and_party() {
    let tmp = tempfile::tempdir().unwrap();
    let c = consortium(&tmp.path().join("c"), &["st-marys", "general"], 1);
    let other = consortium(&tmp.path().join("other"), &["st-marys"], 1);

    let ca_der = pem_der(&c.ca_dir().join("ca.pem"));
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert!(ca.is_ca());
    ca.verify_signature(None).unwrap();
    assert_eq!(hex::encode(sha256(&ca_der)), c.description.ca_cert_sha256);
    let other_ca_der = pem_der(&other.ca_dir().join("ca.pem"));
    let (_, other_ca) = x509_parser::parse_x509_certificate(&other_ca_der).unwrap();

    let expected = [
        ("coordinator", Role::Coordinator, c.coordinator_dir()),
        ("st-marys", Role::Hospital, c.hospital_dir("st-marys")),
        ("general", Role::Hospital, c.hospital_dir("general")),
        (
            "researcher",
            Role::Researcher,
            c.researcher_dir("researcher"),
        ),
        ("auditor", Role::Auditor, c.auditor_dir("auditor")),
    ];
    assert_eq!(c.description.parties.len(), expected.len());
    for (name, role, dir) in expected {
        assert_eq!(
            std::fs::read(dir.join("ca.pem")).unwrap(),
            std::fs::read(c.ca_dir().join("ca.pem")).unwrap()
        );
        let der = pem_der(&dir.join(format!("{name}.pem")));
        assert_eq!(
            peer_from_der(&der).unwrap(),
            Peer {
                name: name.into(),
                role
            }
        );
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        cert.verify_signature(Some(ca.public_key()))
            .unwrap_or_else(|e| panic!("{name}'s certificate does not chain to the CA: {e}"));
        assert!(
            cert.verify_signature(Some(other_ca.public_key())).is_err(),
            "{name}'s certificate verifies under another consortium's CA"
        );
        assert!(!cert.is_ca());
        assert_eq!(cert.issuer(), ca.subject());
        let cn: Vec<_> = cert
            .subject()
            .iter_common_name()
            .map(|cn| cn.as_str().unwrap())
            .collect();
        assert_eq!(cn, [name]);
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert_eq!(eku.server_auth, role == Role::Coordinator, "{name}");
        assert_eq!(eku.client_auth, role != Role::Coordinator, "{name}");
        let sans = &cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        let has = |g: &GeneralName| sans.contains(g);
        assert!(has(&GeneralName::URI(&format!("urn:fedchain:role:{role}"))));
        assert!(has(&GeneralName::URI(&format!(
            "urn:fedchain:party:{name}"
        ))));
        if role == Role::Coordinator {
            assert!(has(&GeneralName::DNSName("localhost")));
            assert!(has(&GeneralName::IPAddress(&[127, 0, 0, 1])));
        } else {
            assert!(
                sans.iter().all(|g| matches!(g, GeneralName::URI(_))),
                "{name}: {sans:?}"
            );
        }
        // The key beside the certificate is the certificate's key.
        let key = rcgen::KeyPair::from_pem(
            &std::fs::read_to_string(dir.join(format!("{name}.key"))).unwrap(),
        )
        .unwrap();
        assert_eq!(
            key.public_key_raw(),
            cert.public_key().subject_public_key.data.as_ref()
        );

        let entry = c.description.party(name).unwrap();
        assert_eq!(entry.role, role);
        assert_eq!(entry.cert_sha256, hex::encode(sha256(&der)));
        assert_eq!(c.dir.join(&entry.dir), dir);
    }
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

#[test]
fn coordinator_hosts_go_into_its_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let options = InitOptions {
        coordinator_hosts: names(&["coord.example.org", "10.1.2.3"]),
        researchers: vec![],
        auditors: vec![],
        ..small()
    };
    let c = init(&tmp.path().join("c"), &names(&["a"]), 1, &options).unwrap();
    let der = pem_der(&c.coordinator_dir().join("coordinator.pem"));
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let sans = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .clone();
    assert!(sans.contains(&GeneralName::DNSName("coord.example.org")));
    assert!(sans.contains(&GeneralName::IPAddress(&[10, 1, 2, 3])));
    assert!(!sans.contains(&GeneralName::DNSName("localhost")));
    // No researchers or auditors: their group folders exist and are empty.
    assert_eq!(
        std::fs::read_dir(c.dir.join("researchers"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(c.description.parties.len(), 2);
}

#[test]
fn refuses_a_non_empty_folder_and_leaves_it_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "keep me").unwrap();
    let err = init(&dir, &names(&["a"]), 1, &small()).unwrap_err();
    assert!(matches!(err, ConsortiumError::NotEmpty { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("not empty") && msg.contains(&dir.display().to_string()),
        "{msg}"
    );
    assert_eq!(tree(&dir).keys().collect::<Vec<_>>(), ["notes.txt"]);

    // A second init over a consortium is refused too, and the first stays valid.
    let c = consortium(&tmp.path().join("d"), &["a"], 1);
    let before = tree(&c.dir);
    assert!(matches!(
        init(&c.dir, &names(&["a"]), 1, &small()),
        Err(ConsortiumError::NotEmpty { .. })
    ));
    assert_eq!(tree(&c.dir), before);

    // A file is not a folder.
    let file = tmp.path().join("file");
    std::fs::write(&file, "").unwrap();
    let err = init(&file, &names(&["a"]), 1, &small()).unwrap_err();
    assert!(
        matches!(err, ConsortiumError::NotADirectory { .. }),
        "{err:?}"
    );

    // An existing empty folder is fine.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    init(&empty, &names(&["a"]), 1, &small()).unwrap();
    assert!(empty.join(DESCRIPTION_FILE).is_file());
}

#[test]
fn refuses_bad_names_duplicates_and_thresholds_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let with = |researchers: &[&str], auditors: &[&str]| InitOptions {
        researchers: names(researchers),
        auditors: names(auditors),
        ..small()
    };
    let cases: Vec<(Vec<String>, usize, InitOptions, &str)> = vec![
        (names(&["St-Marys"]), 1, small(), "InvalidName"),
        (names(&["st marys"]), 1, small(), "InvalidName"),
        (names(&[""]), 1, small(), "InvalidName"),
        (names(&["../evil"]), 1, small(), "InvalidName"),
        (names(&["a"]), 1, with(&["lab_1"], &[]), "InvalidName"),
        (names(&["a"]), 1, with(&[], &["Audit"]), "InvalidName"),
        (names(&["a", "a"]), 1, small(), "DuplicateName"),
        (names(&["a", "b"]), 1, with(&["b"], &[]), "DuplicateName"),
        (names(&["a"]), 1, with(&["r"], &["r"]), "DuplicateName"),
        (names(&["coordinator"]), 1, small(), "DuplicateName"),
        (names(&["a", "b"]), 0, small(), "InvalidThreshold"),
        (names(&["a", "b"]), 3, small(), "InvalidThreshold"),
        (vec![], 0, small(), "InvalidOption"),
    ];
    for (hospitals, t, options, kind) in cases {
        let err = init(&dir, &hospitals, t, &options).unwrap_err();
        assert!(
            format!("{err:?}").starts_with(kind),
            "{hospitals:?} t={t}: expected {kind}, got {err:?}"
        );
        assert!(!dir.exists(), "a refused init created {}", dir.display());
    }
    let msg = init(&dir, &names(&["a", "b"]), 3, &small())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("between 1 and the number of hospitals (2), got 3"),
        "{msg}"
    );
    let msg = init(&dir, &names(&["a", "a"]), 1, &small())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("\"a\" is used twice"), "{msg}");
}
