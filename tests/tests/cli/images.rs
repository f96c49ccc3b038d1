//! Hospitals' images end to end: `data split --format png|dicom` writes real image files (DICOM
//! that pydicom reads with the source's pixels), workers train an encrypted job on them, a
//! hospital with a bad file declines without leaking its name, the release applies to raw files
//! and the ledger replays.

use std::time::Duration;

use fedchain_datasets::{
    load_images, partition, train_test_split, write_images, Builtin, ImageFormat, Schema, Scheme,
};
use fedchain_tests::{as_party, failed_stderr, fedchain, json, logs, ok_stdout, s, venv_python};

fn digits_schema() -> Schema {
    let b = Builtin::Digits;
    Schema {
        image: b.image_shape(),
        ..b.schema()
    }
}

fn split(out: &std::path::Path, format: &str, names: &str) {
    let split = fedchain(&[
        "data",
        "split",
        "--dataset",
        "digits",
        "--names",
        names,
        "--scheme",
        "dirichlet",
        "--seed",
        "2",
        "--format",
        format,
        "--out",
        s(out),
        "--json",
    ]);
    let summary = json(&split);
    assert_eq!(summary["hospitals"].as_array().unwrap().len(), 3);
}

/// What `data split --format dicom` writes is DICOM to an independent reader: pydicom opens every
/// file (refusing anything it finds invalid), and its pixels after the modality LUT, and the
/// labels, are the bundled digits' rows at that hospital. The PNG split loads the same.
#[test]
fn split_as_dicom_is_real_dicom_with_the_source_pixels_and_png_loads_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let (dcm, png) = (tmp.path().join("dcm"), tmp.path().join("png"));
    split(&dcm, "dicom", "h1,h2,h3");
    split(&png, "png", "h1,h2,h3");

    let digits = Builtin::Digits.load().unwrap();
    let part = partition(&digits, 3, Scheme::Dirichlet { alpha: 0.5 }, 2).unwrap();
    let script = r#"
import csv, json, sys, warnings
import pydicom
from pydicom.pixels import apply_modality_lut
warnings.simplefilter("error")
pydicom.config.settings.reading_validation_mode = pydicom.config.RAISE
folder = sys.argv[1]
out = []
with open(folder + "/labels.csv") as f:
    for row in csv.DictReader(f):
        ds = pydicom.dcmread(folder + "/" + row["file"])
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1", ds.file_meta.TransferSyntaxUID
        assert ds.SOPClassUID.name == "Secondary Capture Image Storage", ds.SOPClassUID.name
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        px = apply_modality_lut(ds.pixel_array, ds)
        out.append([int(row["label"]), [float(v) for v in px.flatten()]])
print(json.dumps(out))
"#;
    for (k, expected) in part.datasets(&digits).iter().enumerate() {
        let h = format!("h{}", k + 1);
        let read = std::process::Command::new(venv_python())
            .arg("-c")
            .arg(script)
            .arg(dcm.join(&h))
            .output()
            .expect("run the venv's python (scripts/setup.sh installs pydicom)");
        assert!(
            read.status.success(),
            "pydicom refused {h}'s files:\n{}",
            String::from_utf8_lossy(&read.stderr)
        );
        let rows: Vec<(f32, Vec<f32>)> = serde_json::from_slice(&read.stdout).unwrap();
        assert_eq!(rows.len(), expected.len(), "{h}");
        for (i, (label, pixels)) in rows.iter().enumerate() {
            assert_eq!(*label, expected.targets()[i], "{h} image {i}");
            assert_eq!(pixels.as_slice(), expected.row(i), "{h} image {i}");
        }
        // fedchain's own loader reads both folders as the same rows.
        let from_dicom = load_images(&dcm.join(&h), &digits_schema()).unwrap();
        let from_png = load_images(&png.join(&h), &digits_schema()).unwrap();
        assert_eq!(from_dicom.features(), expected.features());
        assert_eq!(from_png.features(), expected.features());
        assert_eq!(from_png.targets(), expected.targets());
    }

    // Only datasets of images can be written as images.
    let refused = failed_stderr(
        &fedchain(&[
            "data",
            "split",
            "--dataset",
            "breast-cancer",
            "--hospitals",
            "3",
            "--format",
            "dicom",
            "--out",
            s(&tmp.path().join("no")),
        ]),
        1,
    );
    assert!(refused.contains("only the bundled digits"), "{refused}");
    let refused = failed_stderr(
        &fedchain(&[
            "demo",
            "--plaintext",
            "--images",
            "png",
            "--dataset",
            "diabetes",
        ]),
        1,
    );
    assert!(refused.contains("diabetes is a table"), "{refused}");
}

/// An encrypted job that declares 8x8 grayscale images, in real processes over mutual TLS: h1
/// reads DICOM files, h2 PNG files; h3's folder holds one image of the wrong shape, so it
/// declines, its log naming the file and the ledger's decline naming none. The job trains on the
/// other two; the release, applied with `predict --images` to their held-out files, scores what
/// the job reported; the ledger replays.
#[test]
fn an_image_job_trains_on_dicom_and_png_folders_and_a_bad_file_is_declined_privately() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cl = fedchain_tests::start_with(dir, &[]);
    let layout = fedchain_tests::Layout::new(dir);
    let url = cl.url.clone();
    let mut cl = cl;
    let (dcm, png) = (dir.join("dcm"), dir.join("png"));
    split(&dcm, "dicom", "h1,h2,h3");
    split(&png, "png", "h1,h2,h3");
    // h3's folder: one file is 8x6, not 8x8.
    let shape = Builtin::Digits.image_shape().unwrap();
    let wrong = fedchain_datasets::ImageShape::new(1, 8, 6).unwrap();
    fedchain_datasets::write_png(&png.join("h3/00003.png"), wrong, &[1.0; 48]).unwrap();
    let folders = [
        ("h1", dcm.join("h1")),
        ("h2", png.join("h2")),
        ("h3", png.join("h3")),
    ];
    for (h, folder) in &folders {
        let mut c = layout.worker_config(h, &url);
        c.data = folder.clone();
        let cfg = layout.write_toml(&format!("{h}.toml"), &c);
        cl.procs.0.push(fedchain_tests::spawn(
            &["worker", "--config", s(&cfg)],
            &layout.log(h),
        ));
    }
    std::fs::write(
        dir.join("job.toml"),
        "model = \"cnn\"\nrounds = 3\nseed = 1\n\n[schema]\nkind = \"image\"\nchannels = 1\n\
         height = 8\nwidth = 8\ntarget = \"label\"\ntask = \"multiclass\"\nclasses = 10\n",
    )
    .unwrap();
    let alice = layout.alice();
    let submitted = json(&fedchain(&as_party(
        &["job", "submit", s(&dir.join("job.toml")), "--json"],
        &url,
        s(&alice),
    )));
    assert_eq!(submitted["job"], 1);
    let watched = fedchain(&as_party(&["job", "watch", "1", "--json"], &url, s(&alice)));
    let stdout = String::from_utf8_lossy(&watched.stdout).to_string();
    assert!(watched.status.success(), "{stdout}\n{}", logs(dir));
    let outcome: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(outcome["finished"], true, "{outcome}");
    let accuracy = outcome["final_metrics"]["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.85, "accuracy {accuracy} after 3 rounds");

    // h3 declined; the ledger's reason says what kind of problem, never which file.
    let declines: Vec<&str> = stdout.lines().filter(|l| l.contains("declined")).collect();
    assert!(
        declines
            .iter()
            .any(|l| l.contains("h3") && l.contains("declared images")),
        "{stdout}"
    );
    assert!(
        declines.iter().all(|l| !l.contains("00003.png")),
        "{stdout}"
    );
    let h3 = std::fs::read_to_string(layout.log("h3")).unwrap();
    assert!(
        h3.contains("00003.png") && h3.contains("8x6") && h3.contains("declares 8x8"),
        "{h3}"
    );

    // The release applies to raw files: the participants' held-out images (each worker's split:
    // 0.2, the job's seed) score exactly what the job reported.
    let model = dir.join("model.safetensors");
    let mut downloaded = false;
    for _ in 0..50 {
        let out = fedchain(&as_party(
            &["job", "download", "1", "--out", s(&model), "--json"],
            &url,
            s(&alice),
        ));
        if out.status.success() {
            downloaded = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        downloaded,
        "the model could not be downloaded\n{}",
        logs(dir)
    );
    let held_out = dir.join("held-out");
    let mut union: Option<fedchain_datasets::Dataset> = None;
    for (_, folder) in &folders[..2] {
        let rows = load_images(folder, &digits_schema()).unwrap();
        let (_, test) = train_test_split(&rows, 0.2, 1).unwrap();
        union = Some(match union {
            None => test,
            Some(u) => {
                let both = [u.features(), test.features()].concat();
                let labels = [u.targets(), test.targets()].concat();
                let mut csv = String::from("label");
                for i in 0..64 {
                    csv.push_str(&format!(",p{i}"));
                }
                csv.push('\n');
                for (r, y) in both.chunks(64).zip(&labels) {
                    csv.push_str(&format!("{y}"));
                    for v in r {
                        csv.push_str(&format!(",{v}"));
                    }
                    csv.push('\n');
                }
                fedchain_datasets::parse_csv(csv.as_bytes(), "held-out", &Builtin::Digits.schema())
                    .unwrap()
            }
        });
    }
    let union = union.unwrap();
    write_images(&union, shape, ImageFormat::Dicom, &held_out, "held-out").unwrap();
    let scored = json(&fedchain(&[
        "predict",
        "--model",
        s(&model),
        "--images",
        s(&held_out),
        "--json",
    ]));
    let on_files = scored["metrics"]["accuracy"].as_f64().unwrap();
    assert!(
        (on_files - accuracy).abs() < 1e-9,
        "predict on the held-out files: {on_files}, the job reported {accuracy}"
    );
    assert_eq!(scored["rows"], union.len());
    assert_eq!(scored["files"][1], "00001.dcm");
    let missing = failed_stderr(
        &fedchain(&[
            "predict",
            "--model",
            s(&model),
            "--images",
            s(&dir.join("no-such-folder")),
        ]),
        1,
    );
    assert!(missing.contains("no such folder"), "{missing}");
    let info = ok_stdout(&fedchain(&["model", "info", s(&model)]));
    assert!(
        info.contains("8x8 grayscale images") && info.contains("--images DIR"),
        "{info}"
    );
    // Without labels, every file is predicted by name.
    std::fs::remove_file(held_out.join("labels.csv")).unwrap();
    let unlabeled = json(&fedchain(&[
        "predict",
        "--model",
        s(&model),
        "--images",
        s(&held_out),
        "--json",
    ]));
    assert!(unlabeled["metrics"].is_null());
    assert_eq!(unlabeled["predictions"], scored["predictions"]);
    assert_eq!(unlabeled["files"][0], "00000.dcm");
    // A model of images is not applied to a table.
    let refused = failed_stderr(
        &fedchain(&[
            "predict",
            "--model",
            s(&model),
            "--csv",
            s(&dir.join("data/hospital-1.csv")),
        ]),
        1,
    );
    assert!(
        refused.contains("8x8 grayscale images") && refused.contains("--images"),
        "{refused}"
    );

    // An auditor replays the live ledger, mirrored over the ledger service: rounds 0 to 3, each
    // model evaluated by the two hospitals that took part.
    let report = json(&fedchain(&[
        "audit",
        "replay",
        "--coordinator",
        &url,
        "--consortium",
        s(&layout.audra()),
        "--json",
    ]));
    assert_eq!(report["ok"], true, "{report}");
    let rounds = report["replay"]["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 4, "{report}");
    assert_eq!(rounds[3]["evaluations_verified"], 2, "{report}");
}

/// A researcher's module for an image job receives images `[n, 1, 8, 8]`, not rows: this one
/// starts with a convolution, which refuses 2-D input. It trains on the PNG folders (the demo's
/// plaintext run: the same split, statistics and training as the workers') and is refused, with
/// the reason, for the table form of the same data.
#[test]
fn a_torchscript_module_of_an_image_job_receives_images() {
    let tmp = tempfile::tempdir().unwrap();
    let module = tmp.path().join("conv.pt");
    let export = r#"
import sys, torch, torch.nn as nn
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10))
torch.jit.script(net).save(sys.argv[1])
"#;
    let exported = std::process::Command::new(venv_python())
        .arg("-c")
        .arg(export)
        .arg(&module)
        .output()
        .unwrap();
    assert!(exported.status.success(), "{exported:?}");
    let summary = json(&fedchain(&[
        "demo",
        "--plaintext",
        "--dataset",
        "digits",
        "--images",
        "png",
        "--model-file",
        s(&module),
        "--rounds",
        "2",
        "--json",
    ]));
    let accuracy = summary["final_metrics"]["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.85, "{summary}");
    let refused = failed_stderr(
        &fedchain(&[
            "demo",
            "--plaintext",
            "--dataset",
            "digits",
            "--model-file",
            s(&module),
            "--rounds",
            "1",
        ]),
        1,
    );
    assert!(refused.contains("forward pass"), "{refused}");
}
