//! `fedchain model inspect` on TorchScript modules that PyTorch itself writes (the project's
//! `.venv` torch, as a researcher's would): a residual CNN (scripted), an MLP (traced), and one
//! that reads a file. The parameters it lists are PyTorch's own, in byte-wise name order; the
//! module that reads a file is refused by name, without being loaded.

use std::path::Path;
use std::process::Command;

use fedchain_tests::{fedchain, json, ok_stdout, s};

/// Writes the modules with PyTorch, and PyTorch's view of their parameters (`NAME.params.json`).
const MODULES: &str = r#"
import json, torch, torch.nn as nn, torch.nn.functional as F

class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.bn = nn.BatchNorm2d(c)
    def forward(self, x):
        return F.relu(x + self.bn(self.conv(x)))

class DigitsNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.block = Residual(8)
        self.fc = nn.Linear(8 * 4 * 4, 10)
    def forward(self, x):
        x = x.view(-1, 1, 8, 8)
        x = F.max_pool2d(self.block(F.relu(self.stem(x))), 2)
        return self.fc(torch.flatten(x, 1))

class ReadsAFile(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1)
    def forward(self, x):
        return self.fc(x) + torch.from_file("/etc/hostname", None, 4).sum()

class NoGradient(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(30, 1)
    def forward(self, x):
        return torch.zeros([x.size(0), 1])

class Views(nn.Module):
    # Buffers that are views into a larger storage (at an offset, strided), a tensor attribute
    # (a constant once traced): tensors as torch.jit.save writes them, which the check must pass.
    def __init__(self):
        super().__init__()
        base = torch.arange(12.0)
        self.register_buffer("tail", base[6:])
        self.register_buffer("column", base.view(3, 4)[:, 1])
        self.fc = nn.Linear(30, 1)
        self.c = torch.tensor([2.0, 3.0])
    def forward(self, x):
        return self.fc(x) * self.tail.sum() + self.c.sum() + self.column.sum()

class LoopsWhenTraining(nn.Module):
    # Answers a forward pass in eval mode (the researcher's check at submit), loops in training.
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(30, 1)
    def forward(self, x):
        y = self.fc(x)
        if self.training:
            while bool(y.sum() > -1.0e30):
                y = y * 1.0
        return y

class Table(nn.Module):
    # An MLP that scales its inputs by a table of 1.1 million floats (a buffer, not trained): a
    # 4.4 MB file, more than one gRPC message (4 MiB) holds.
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(30, 16)
        self.out = nn.Linear(16, 1)
        self.register_buffer("table", torch.ones(1_100_000))
    def forward(self, x):
        return self.out(torch.relu(self.hidden(x * self.table[:30])))

mlp = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1))
modules = {
    "loops": torch.jit.script(LoopsWhenTraining()),
    "views_scripted": torch.jit.script(Views()),
    "views_traced": torch.jit.trace(Views(), torch.zeros(2, 30)),
    "digits": torch.jit.script(DigitsNet()),
    "mlp": torch.jit.trace(mlp, torch.zeros(2, 30)),
    "table": torch.jit.script(Table()),
    "evil": torch.jit.script(ReadsAFile()),
    "ten_outputs": torch.jit.script(nn.Linear(30, 10)),
    "no_gradient": torch.jit.script(NoGradient()),
}
for name, m in modules.items():
    m.save(f"{name}.pt")
    params = sorted((n, list(p.shape)) for n, p in m.named_parameters())
    json.dump(params, open(f"{name}.params.json", "w"))

# The MLP with its first storage record cut to 4 bytes, the pickle unchanged: libtorch would take
# the record as the floats the pickle says it holds, and read and write past it.
import zipfile
with zipfile.ZipFile("mlp.pt") as src, zipfile.ZipFile("short_record.pt", "w") as dst:
    for info in src.infolist():
        data = src.read(info.filename)
        dst.writestr(info.filename, data[:4] if info.filename.endswith("/data/0") else data)
"#;

fn write_modules(dir: &Path) {
    let python = fedchain_tests::venv_python();
    std::fs::write(dir.join("modules.py"), MODULES).unwrap();
    let out = Command::new(&python)
        .arg("modules.py")
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/setup.sh creates it)", python.display()));
    assert!(
        out.status.success(),
        "PyTorch could not write the modules:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn inspect_lists_pytorchs_parameters_and_refuses_a_module_that_reads_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_modules(dir);

    for name in ["digits", "mlp", "views_scripted", "views_traced"] {
        let file = dir.join(format!("{name}.pt"));
        let report = json(&fedchain(&["model", "inspect", s(&file), "--json"]));
        assert_eq!(report["forbidden"], serde_json::json!([]), "{report}");
        let from_torch: Vec<(String, Vec<usize>)> = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}.params.json"))).unwrap(),
        )
        .unwrap();
        let listed: Vec<(String, Vec<usize>)> = report["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| serde_json::from_value(serde_json::json!([p["name"], p["shape"]])).unwrap())
            .collect();
        // Python sorts str by code point, as byte-wise order does for these ASCII names.
        assert_eq!(listed, from_torch, "{name}");
        assert!(!report["sources"].as_array().unwrap().is_empty());
    }
    let digits = ok_stdout(&fedchain(&["model", "inspect", s(&dir.join("digits.pt"))]));
    for line in [
        "torch.conv2d",
        "block.conv.weight                [8, 8, 3, 3]",
        "parameters: 1970 in 8 tensors",
        "verdict:    allowed",
        "def forward(",
    ] {
        assert!(digits.contains(line), "{line:?} in:\n{digits}");
    }

    let evil = fedchain(&["model", "inspect", s(&dir.join("evil.pt")), "--json"]);
    assert_eq!(evil.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&evil.stdout).unwrap();
    assert_eq!(report["forbidden"], serde_json::json!(["torch.from_file"]));
    assert!(report["parameters"].is_null(), "not loaded: {report}");
    let said = String::from_utf8_lossy(&evil.stderr);
    assert!(
        said.contains("REFUSED") && said.contains("torch.from_file"),
        "{said}"
    );

    // Refused before libtorch sees it, naming the record.
    let short = fedchain(&["model", "inspect", s(&dir.join("short_record.pt"))]);
    assert!(!short.status.success());
    let said = String::from_utf8_lossy(&short.stderr);
    assert!(
        said.contains("data.pkl") && said.contains("but its record holds 4 bytes"),
        "{said}"
    );

    let not_a_module = fedchain(&["model", "inspect", s(&dir.join("modules.py"))]);
    assert!(!not_a_module.status.success());
    let said = String::from_utf8_lossy(&not_a_module.stderr);
    assert!(said.contains("not a TorchScript file"), "{said}");

    // What `job submit` does before sending, timed: a module past the message size is streamed.
    std::fs::write(
        dir.join("job.toml"),
        "dataset = \"breast-cancer\"\nmodel = { torchscript = \"table.pt\" }\n",
    )
    .unwrap();
    let bench = json(&fedchain(&[
        "bench",
        "submit",
        s(&dir.join("job.toml")),
        "--repeat",
        "2",
        "--json",
    ]));
    assert_eq!(bench["parameters"], 30 * 16 + 16 + 16 + 1, "{bench}");
    assert_eq!(bench["streamed"], true, "{bench}");
    assert!(bench["module_bytes"].as_u64().unwrap() > 4 << 20, "{bench}");
    assert!(bench["median_s"].as_f64().unwrap() > 0.0, "{bench}");
}

/// Applies the trained module `m.pt` in PyTorch to the rows of `CSV` (the features scaled with
/// the preprocessing `m.safetensors` carries) and prints the classes as JSON.
const APPLY_IN_PYTORCH: &str = r#"
import csv, json, sys, torch
from safetensors import safe_open
with safe_open("m.safetensors", framework="pt") as f:
    scaling = json.loads(f.metadata()["fedchain.preprocessing"])["scaling"]
rows = list(csv.DictReader(open(sys.argv[1])))
x = torch.tensor([[float(r[c]) for c in scaling["feature_names"]] for r in rows])
x = (x - torch.tensor(scaling["means"])) / torch.tensor(scaling["stds"])
module = torch.jit.load("m.pt")
module.eval()
with torch.no_grad():
    out = module(x)
print(json.dumps({"classes": out.argmax(1).tolist(), "outputs": out.tolist()}))
"#;

/// PyTorch's classes and outputs (`APPLY_IN_PYTORCH`'s), against `fedchain predict --json`'s: the
/// same classes, and every output within 1e-5 of PyTorch's, relative to its size when above 1
/// (float32 logits of 10 to 30 differ in their last bits between the two runtimes).
fn same_as_pytorch(from_torch: &serde_json::Value, predicted: &serde_json::Value) {
    let classes: Vec<i64> = predicted["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap() as i64)
        .collect();
    let torch_classes: Vec<i64> = serde_json::from_value(from_torch["classes"].clone()).unwrap();
    assert_eq!(
        torch_classes, classes,
        "PyTorch and fedchain predict disagree"
    );
    let ours: Vec<Vec<f64>> = serde_json::from_value(predicted["outputs"].clone()).unwrap();
    let theirs: Vec<Vec<f64>> = serde_json::from_value(from_torch["outputs"].clone()).unwrap();
    assert_eq!(ours.len(), theirs.len());
    let worst = ours
        .iter()
        .flatten()
        .zip(theirs.iter().flatten())
        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0.0, f64::max);
    assert!(worst <= 1e-5, "outputs differ by up to {worst} (relative)");
}

#[test]
fn a_researchers_module_trains_and_its_trained_file_predicts_the_same_in_pytorch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = fedchain_tests::venv_python();
    let net = dir.join("net.pt");
    let exported = Command::new(&python)
        .arg(root.join("examples/digits_resnet.py"))
        .arg(&net)
        .output()
        .unwrap();
    assert!(exported.status.success(), "{exported:?}");

    // The example's residual CNN, trained on one machine from its own parameters.
    let out = dir.join("m.safetensors");
    let trained = json(&fedchain(&[
        "train",
        "--dataset",
        "digits",
        "--model-file",
        s(&net),
        "--epochs",
        "6",
        "--out",
        s(&out),
        "--json",
    ]));
    let accuracy = trained["test"]["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.95, "held-out accuracy {accuracy}");
    assert_eq!(trained["model"]["name"], "torchscript", "{trained}");
    assert_eq!(trained["parameters"], 12010);

    // The trained module is the same code with other parameters.
    let before = json(&fedchain(&["model", "inspect", s(&net), "--json"]));
    let after = json(&fedchain(&[
        "model",
        "inspect",
        s(&dir.join("m.pt")),
        "--json",
    ]));
    assert_eq!(before["code_sha256"], after["code_sha256"]);
    assert_eq!(trained["model"]["module"], after["code_sha256"]);
    assert_ne!(before["sha256"], after["sha256"]);

    // fedchain predict (the module found beside the model) and PyTorch agree on every row.
    let digits = root.join("datasets/data/digits.csv");
    let predicted = json(&fedchain(&[
        "predict",
        "--model",
        s(&out),
        "--csv",
        s(&digits),
        "--json",
    ]));
    assert_eq!(predicted["predictions"].as_array().unwrap().len(), 1797);
    std::fs::write(dir.join("apply.py"), APPLY_IN_PYTORCH).unwrap();
    let applied = Command::new(&python)
        .args(["apply.py", s(&digits)])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    same_as_pytorch(
        &serde_json::from_slice(&applied.stdout).unwrap(),
        &predicted,
    );

    // Another module is not this model's, and a module that does not fit the task is refused.
    write_modules(dir);
    let other = fedchain(&[
        "predict",
        "--model",
        s(&out),
        "--module",
        s(&dir.join("mlp.pt")),
        "--csv",
        s(&digits),
    ]);
    assert!(!other.status.success());
    let said = String::from_utf8_lossy(&other.stderr);
    assert!(said.contains("not the module the model names"), "{said}");
    let misfit = fedchain(&[
        "train",
        "--dataset",
        "breast-cancer",
        "--model-file",
        s(&net),
        "--epochs",
        "1",
    ]);
    assert!(!misfit.status.success());
    let said = String::from_utf8_lossy(&misfit.stderr);
    assert!(
        said.contains("a forward pass on a batch of 2 rows of 30 features fails"),
        "{said}"
    );
    let ten = fedchain(&[
        "train",
        "--dataset",
        "breast-cancer",
        "--model-file",
        s(&dir.join("ten_outputs.pt")),
    ]);
    let said = String::from_utf8_lossy(&ten.stderr);
    assert!(
        !ten.status.success()
            && said.contains("returned [2, 10] for 2 rows; it must return [2, 1]"),
        "{said}"
    );
    // libtorch throws when training a module whose output needs no gradient: an error, no crash.
    let stuck = fedchain(&[
        "train",
        "--dataset",
        "breast-cancer",
        "--model-file",
        s(&dir.join("no_gradient.pt")),
        "--epochs",
        "1",
    ]);
    let said = String::from_utf8_lossy(&stuck.stderr);
    assert_eq!(stuck.status.code(), Some(1), "{said}");
    assert!(
        said.contains(
            "error: libtorch: the model failed: element 0 of tensors does not require grad"
        ),
        "{said}"
    );
    let evil = fedchain(&[
        "train",
        "--dataset",
        "breast-cancer",
        "--model-file",
        s(&dir.join("evil.pt")),
    ]);
    let said = String::from_utf8_lossy(&evil.stderr);
    assert!(
        !evil.status.success() && said.contains("torch.from_file"),
        "{said}"
    );
}

/// A researcher's module trains in an encrypted job through real processes (coordinator and three
/// workers over mutual TLS): `model = { torchscript = "table.pt" }` in `job.toml`, and the
/// download brings back the trained module, which PyTorch applies as `fedchain predict` does.
///
/// The module is larger than one gRPC message: `job submit` streams the spec, the hospitals read
/// it from the ledger by the digest their offer names. The coordinator sends no model inline
/// (`inline_model_bytes = 0`), so every task's model is fetched, as a large model's is.
#[test]
fn a_torchscript_job_runs_in_real_processes_and_its_trained_module_comes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_modules(dir);
    let layout = fedchain_tests::Layout::new(dir);
    layout.provision();
    let mut config = layout.coordinator_config("127.0.0.1:0", 120);
    config.inline_model_bytes = 0;
    // h3's worker.toml keeps the default: it runs no researcher's module. It declines the job,
    // signed and on the ledger, and the job starts with h1 and h2 without waiting for the
    // enrollment deadline.
    let mut cl = fedchain_tests::launch_configured(dir, &["h1", "h2"], &config);
    let mut h3 = layout.worker_config("h3", &cl.url);
    h3.torchscript = false;
    let h3 = layout.write_toml("h3.toml", &h3);
    cl.procs.0.push(fedchain_tests::spawn(
        &["worker", "--config", s(&h3)],
        &layout.log("h3"),
    ));
    std::fs::write(
        dir.join("job.toml"),
        "dataset = \"breast-cancer\"\nmodel = { torchscript = \"table.pt\" }\nrounds = 2\n",
    )
    .unwrap();
    let module_bytes = std::fs::metadata(dir.join("table.pt")).unwrap().len();
    assert!(
        module_bytes > fedchain_proto::limits::MAX_MESSAGE_BYTES as u64,
        "{module_bytes}"
    );
    let alice = layout.alice();
    let url = cl.url.clone();
    let submitted = json(&fedchain(&fedchain_tests::as_party(
        &["job", "submit", s(&dir.join("job.toml")), "--json"],
        &url,
        s(&alice),
    )));
    assert_eq!(submitted["job"], 1);
    let watched = fedchain(&fedchain_tests::as_party(
        &["job", "watch", "1", "--json"],
        &url,
        s(&alice),
    ));
    let lines = String::from_utf8_lossy(&watched.stdout);
    assert!(watched.status.success(), "{lines}");
    let end: serde_json::Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    let declined = &end["declined"];
    assert_eq!(declined.as_array().map(Vec::len), Some(1), "{end}");
    assert_eq!(declined[0]["hospital"], "h3", "{end}");
    let reason = declined[0]["reason"].as_str().unwrap();
    assert!(reason.contains("torchscript = false"), "{reason}");
    assert!(
        lines.lines().any(|l| l.contains("\"declined\":{")),
        "a JSON line as it happened: {lines}"
    );
    let status = ok_stdout(&fedchain(&fedchain_tests::as_party(
        &["job", "status", "1"],
        &url,
        s(&alice),
    )));
    assert!(
        status.contains("declined by h3: it runs a researcher's TorchScript module"),
        "{status}"
    );
    let out = dir.join("m.safetensors");
    let mut downloaded = None;
    for _ in 0..50 {
        let got = fedchain(&fedchain_tests::as_party(
            &["job", "download", "1", "--out", s(&out), "--json"],
            &url,
            s(&alice),
        ));
        if got.status.success() {
            downloaded = Some(json(&got));
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let downloaded = downloaded.expect("the model downloads and verifies");
    assert_eq!(downloaded["module"], s(&dir.join("m.pt")), "{downloaded}");

    let rows = layout.data("h1");
    let predicted = json(&fedchain(&[
        "predict",
        "--model",
        s(&out),
        "--csv",
        s(&rows),
        "--json",
    ]));
    let accuracy = predicted["metrics"]["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.8, "{predicted}");
    // Binary: PyTorch's class is the sign of the one logit.
    let apply = APPLY_IN_PYTORCH.replace("out.argmax(1)", "(out[:, 0] > 0).int()");
    std::fs::write(dir.join("apply.py"), apply).unwrap();
    let python = fedchain_tests::venv_python();
    let applied = Command::new(&python)
        .args(["apply.py", s(&rows)])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    same_as_pytorch(
        &serde_json::from_slice(&applied.stdout).unwrap(),
        &predicted,
    );

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
    assert_eq!(report["replay"]["declined"], 1, "{report}");
}

/// `examples/breast_cancer_mlp.py` restates the built-in MLP in PyTorch with the same tensor
/// names, so the job's seeded start is the same and the demo's plaintext run reaches the very
/// figures of the built-in model (the issue's target: within 1 percentage point).
#[test]
fn the_built_in_mlp_restated_in_torchscript_trains_to_the_same_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let module = tmp.path().join("mlp.pt");
    let exported = Command::new(fedchain_tests::venv_python())
        .arg(root.join("examples/breast_cancer_mlp.py"))
        .arg(&module)
        .output()
        .unwrap();
    assert!(exported.status.success(), "{exported:?}");
    let run = |extra: &[&str]| {
        let mut args = vec!["demo", "--plaintext", "--rounds", "3", "--json"];
        args.extend_from_slice(extra);
        let summary = json(&fedchain(&args));
        summary["final_metrics"]["accuracy"].as_f64().unwrap()
    };
    let built_in = run(&[]);
    let restated = run(&["--model-file", s(&module)]);
    assert!(built_in > 0.9, "{built_in}");
    assert!(
        (built_in - restated).abs() < 0.01,
        "built-in {built_in}, TorchScript {restated}"
    );
}

/// A module that loops when it trains, in real processes: each worker stops it after its
/// `torchscript_seconds`, records its code digest and exits with status 3, saying why; started
/// again, the worker refuses to run it. Nothing else of the job is lost: its records replay.
#[test]
fn a_module_that_loops_stops_the_worker_once_and_is_refused_after() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_modules(dir);
    let mut cl = fedchain_tests::start_with(dir, &[]);
    let layout = fedchain_tests::Layout::new(dir);
    let url = cl.url.clone();
    let config = |h: &str| {
        let mut c = layout.worker_config(h, &url);
        c.torchscript_seconds = 2;
        layout.write_toml(&format!("{h}.toml"), &c)
    };
    let mut workers = Vec::new();
    for h in fedchain_tests::HOSPITALS {
        let cfg = config(h);
        workers.push(fedchain_tests::spawn(
            &["worker", "--config", s(&cfg)],
            &layout.log(h),
        ));
    }
    std::fs::write(
        dir.join("job.toml"),
        "dataset = \"breast-cancer\"\nmodel = { torchscript = \"loops.pt\" }\nrounds = 1\n",
    )
    .unwrap();
    let alice = layout.alice();
    let submitted = json(&fedchain(&fedchain_tests::as_party(
        &["job", "submit", s(&dir.join("job.toml")), "--json"],
        &url,
        s(&alice),
    )));
    assert_eq!(submitted["job"], 1);
    let inspected = json(&fedchain(&[
        "model",
        "inspect",
        s(&dir.join("loops.pt")),
        "--json",
    ]));
    let digest = inspected["code_sha256"].as_str().unwrap().to_string();

    // Round 0 pools statistics (no module runs); round 1 trains, and loops.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = workers[0].try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "h1 did not stop its module:\n{}",
            fedchain_tests::logs(dir)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(status.code(), Some(3), "{}", fedchain_tests::logs(dir));
    let log = std::fs::read_to_string(layout.log("h1")).unwrap();
    assert!(
        log.contains("job 1, round 1: training") && log.contains("more than 2 s"),
        "{log}"
    );
    let stopped = std::fs::read_to_string(dir.join("state-h1/stopped-modules.txt")).unwrap();
    assert!(stopped.starts_with(&digest), "{stopped}");

    // Started again, it refuses the module rather than run it again.
    let again = fedchain_tests::spawn(
        &["worker", "--config", s(&config("h1"))],
        &layout.log("h1-again"),
    );
    cl.procs.0.push(again);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(layout.log("h1-again")).unwrap_or_default();
        if log.contains("will not run it again") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    cl.procs.0.extend(workers);
}
