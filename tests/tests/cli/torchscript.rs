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

mlp = nn.Sequential(nn.Linear(30, 16), nn.ReLU(), nn.Linear(16, 1))
modules = {
    "digits": torch.jit.script(DigitsNet()),
    "mlp": torch.jit.trace(mlp, torch.zeros(2, 30)),
    "evil": torch.jit.script(ReadsAFile()),
}
for name, m in modules.items():
    m.save(f"{name}.pt")
    params = sorted((n, list(p.shape)) for n, p in m.named_parameters())
    json.dump(params, open(f"{name}.params.json", "w"))
"#;

fn write_modules(dir: &Path) {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
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

    for name in ["digits", "mlp"] {
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

    let not_a_module = fedchain(&["model", "inspect", s(&dir.join("modules.py"))]);
    assert!(!not_a_module.status.success());
    let said = String::from_utf8_lossy(&not_a_module.stderr);
    assert!(said.contains("not a TorchScript file"), "{said}");
}
