"""A researcher's own model for fedchain: a small residual CNN over the 8x8 digits.

fedchain gives a model rows of the dataset's feature columns (here the 64 pixel columns px0..px63,
standardized) and expects one output per class. The module reshapes the rows into 1x8x8 images
itself, so no code outside it needs to know it is an image model.

Export it to TorchScript, which fedchain loads with libtorch (no Python runs on a hospital's
machine):

    .venv/bin/python examples/digits_resnet.py examples/digits_resnet.pt
    fedchain model inspect examples/digits_resnet.pt
    fedchain train --dataset digits --model-file examples/digits_resnet.pt --out digits.safetensors

`scripts/setup.sh` writes examples/digits_resnet.pt the same way.
"""

import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


class Residual(nn.Module):
    """Two 3x3 convolutions whose output is added back to the input."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class DigitsResNet(nn.Module):
    def __init__(self, classes: int = 10, channels: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.block1 = Residual(channels)
        self.block2 = Residual(channels)
        self.head = nn.Linear(channels * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 1, 8, 8)  # 64 pixel columns -> one 8x8 channel
        x = self.block1(F.relu(self.stem(x)))
        x = F.max_pool2d(self.block2(x), 2)  # 8x8 -> 4x4
        return self.head(torch.flatten(x, 1))


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "digits_resnet.pt"
    torch.manual_seed(0)  # the starting parameters travel in the file
    torch.jit.script(DigitsResNet()).save(out)
    print(f"wrote {out}")
