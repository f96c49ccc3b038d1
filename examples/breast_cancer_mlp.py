"""fedchain's built-in MLP for breast-cancer, restated as a researcher's TorchScript module.

Rows of the 30 feature columns in, one logit out (a binary task), through hidden layers of 32 and
16 units with ReLU: the same network as `model = "mlp"`, written in PyTorch.

    .venv/bin/python examples/breast_cancer_mlp.py examples/breast_cancer_mlp.pt
    fedchain demo --model-file examples/breast_cancer_mlp.pt --plaintext
"""

import sys

import torch
import torch.nn as nn


class Mlp(nn.Module):
    def __init__(self, features: int = 30):
        super().__init__()
        self.layer0 = nn.Linear(features, 32)
        self.layer1 = nn.Linear(32, 16)
        self.output = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(torch.relu(self.layer1(torch.relu(self.layer0(x)))))


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "breast_cancer_mlp.pt"
    torch.jit.script(Mlp()).save(out)
    print(f"wrote {out}")
