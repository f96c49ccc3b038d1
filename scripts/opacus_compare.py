"""The Opacus side of the DP-SGD comparison (issue 18): the same data, model, clipping, noise and
epochs as `fedchain train --epsilon E`, centralized, trained by Opacus, the reference DP-SGD.

Usage (Opacus is not part of the project's environment; install it beside it, it needs no other
torch than the project's):
    .venv/bin/pip download opacus==1.6.0 --no-deps -d /tmp/opdl
    .venv/bin/pip install --no-deps --target /tmp/opsite /tmp/opdl/opacus-*.whl opt_einsum scipy
    PYTHONPATH=/tmp/opsite .venv/bin/python scripts/opacus_compare.py breast-cancer 3 \
        --sigma 2.41 --epochs 30 --lr 1e-3 --seeds 1 2 3 4 5

It prints one JSON line per seed: the test accuracy, and the epsilon Opacus's own RDP accountant
gives for the noise (which must agree with fedchain's). The split is stratified 80/20 with the
seed, features standardized on the training rows, as `fedchain train` does (not the same rows:
compare means over seeds).
"""

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from opacus import PrivacyEngine

DATA = Path(__file__).resolve().parent.parent / "datasets" / "data"


def load(name):
    path = {"breast-cancer": "breast_cancer.csv", "digits": "digits.csv"}[name]
    with open(DATA / path) as f:
        rows = list(csv.reader(f))
    x = np.array([[float(v) for v in r[:-1]] for r in rows[1:]], dtype=np.float32)
    y = np.array([int(float(r[-1])) for r in rows[1:]])
    return x, y


def split(x, y, seed, test=0.2):
    rng = np.random.default_rng(seed)
    tr, te = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        k = int(round(len(idx) * test))
        te.extend(idx[:k])
        tr.extend(idx[k:])
    return np.array(tr), np.array(te)


def model(name):
    # fedchain's presets: the MLP 30-32-16-1 for breast cancer, the CNN (16, 32 channels, 64
    # hidden) for the 8x8 digits.
    if name == "breast-cancer":
        return nn.Sequential(nn.Linear(30, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 1))
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, 10),
    )


def run(args, seed):
    torch.manual_seed(seed)
    x, y = load(args.dataset)
    tr, te = split(x, y, seed)
    mu, sd = x[tr].mean(0), x[tr].std(0)
    sd[sd == 0] = 1.0
    xs = torch.tensor((x - mu) / sd)
    binary = args.dataset == "breast-cancer"
    ys = torch.tensor(y, dtype=torch.float32).unsqueeze(1) if binary else torch.tensor(y)
    net = model(args.dataset)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(xs[tr], ys[tr]), batch_size=args.batch_size
    )
    engine = PrivacyEngine(accountant="rdp")
    net, opt, loader = engine.make_private(
        module=net, optimizer=opt, data_loader=loader,
        noise_multiplier=args.sigma, max_grad_norm=args.max_grad_norm, poisson_sampling=True,
    )
    loss = nn.BCEWithLogitsLoss() if binary else nn.CrossEntropyLoss()
    for _ in range(args.epochs):
        for bx, by in loader:
            if len(bx) == 0:
                continue
            opt.zero_grad()
            loss(net(bx), by).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        out = net(xs[te])
        pred = (out[:, 0] > 0).long() if binary else out.argmax(1)
        acc = (pred == torch.tensor(y[te])).float().mean().item()
    return {"seed": seed, "accuracy": acc, "opacus_epsilon": engine.get_epsilon(args.delta)}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("dataset", choices=["breast-cancer", "digits"])
    p.add_argument("epsilon", type=float, help="the target, for the record")
    p.add_argument("--sigma", type=float, required=True, help="noise multiplier fedchain chose")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--delta", type=float, default=1e-5)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    a = p.parse_args()
    torch.set_num_threads(2)
    for s in a.seeds:
        print(json.dumps({"dataset": a.dataset, "epsilon_target": a.epsilon, "sigma": a.sigma, **run(a, s)}))
