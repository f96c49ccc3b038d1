//! Party folders opened through their typed readers: what `init` writes opens, and a folder handed
//! to the wrong party or mixed from two consortiums is refused with a message naming the problem.

use fedchain_consortium::{AuditorFolder, CoordinatorFolder, HospitalFolder, ResearcherFolder};

use crate::util::consortium;

#[test]
fn every_folder_init_writes_opens_and_agrees_with_the_description() {
    let tmp = tempfile::tempdir().unwrap();
    let c = consortium(tmp.path(), &["oslo", "bergen", "tromso"], 2);

    let coordinator = CoordinatorFolder::open(&c.coordinator_dir()).unwrap();
    assert_eq!(
        coordinator.hospitals.keys().collect::<Vec<_>>(),
        ["bergen", "oslo", "tromso"]
    );
    assert_eq!(coordinator.hospitals["oslo"].share_index, 1);
    assert_eq!(coordinator.hospitals["tromso"].share_index, 3);
    assert_eq!(
        coordinator.researchers().collect::<Vec<_>>(),
        ["researcher"]
    );

    for (i, name) in ["oslo", "bergen", "tromso"].iter().enumerate() {
        let h = HospitalFolder::open(&c.hospital_dir(name), None).unwrap();
        assert_eq!(h.name, *name);
        assert_eq!(h.share.index(), i + 1);
        assert_eq!(
            h.identity.verifier().public_key(),
            coordinator.hospitals[*name].identity
        );
        assert_eq!(h.peers().len(), 3);
    }
    let r = ResearcherFolder::open(&c.researcher_dir("researcher"), None).unwrap();
    assert_eq!(r.name, "researcher");
    let a = AuditorFolder::open(&c.auditor_dir("auditor")).unwrap();
    assert_eq!(a.hospitals, coordinator.hospitals);
    assert_eq!(a.public_key.digest(), coordinator.public_key.digest());
}

#[test]
fn folders_handed_to_the_wrong_party_or_mixed_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let c = consortium(&tmp.path().join("a"), &["oslo", "bergen"], 2);
    let other = consortium(&tmp.path().join("b"), &["oslo", "bergen"], 2);

    // A hospital folder opened under another hospital's name.
    let e = HospitalFolder::open(&c.hospital_dir("oslo"), Some("bergen"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("belongs to \"oslo\", not \"bergen\""), "{e}");
    // A researcher's folder is not a hospital's, nor a hospital's a researcher's.
    assert!(HospitalFolder::open(&c.researcher_dir("researcher"), None).is_err());
    let e = ResearcherFolder::open(&c.hospital_dir("oslo"), None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("hospital 'oslo'"), "{e}");

    // A key share from another consortium: it does not belong to this public key.
    let mixed = c.hospital_dir("bergen");
    std::fs::copy(
        other.hospital_dir("bergen").join("share.key"),
        mixed.join("share.key"),
    )
    .unwrap();
    assert!(HospitalFolder::open(&mixed, None).is_err());

    // The coordinator's public key swapped for another consortium's.
    let coord = c.coordinator_dir();
    std::fs::copy(
        other.coordinator_dir().join("public.key"),
        coord.join("public.key"),
    )
    .unwrap();
    let e = CoordinatorFolder::open(&coord).err().unwrap().to_string();
    assert!(e.contains("is not the consortium's public key"), "{e}");

    // An auditor's trust file from another consortium.
    let audit = c.auditor_dir("auditor");
    std::fs::copy(
        other.auditor_dir("auditor").join("trust.txt"),
        audit.join("trust.txt"),
    )
    .unwrap();
    let e = AuditorFolder::open(&audit).err().unwrap().to_string();
    assert!(e.contains("names another log key"), "{e}");
}
