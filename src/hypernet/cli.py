"""The `hypernet` command (placeholder until the experiment machinery lands)."""

from __future__ import annotations

import argparse

import torch
from torch import nn

import hypernet as hn


def _check() -> int:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    target = hn.TargetNetwork(module)
    model = hn.HyperModel(target, hn.MLPHyperNetwork(8, target.spec, hidden=(32,)), hn.TaskEmbedding(3, 8))
    x = torch.randn(5, 4)
    y = model(x, torch.tensor([0, 1, 2, 0, 1]))
    ref = torch.stack([model.materialize(torch.tensor(t))(x[i]) for i, t in enumerate([0, 1, 2, 0, 1])])
    err = float((y - ref).abs().max().detach())
    print(f"target P={target.spec.numel}, per-sample output {list(y.shape)}, max |batched - loop| = {err:.2e}")
    return 0 if err < 1e-5 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hypernet")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="the main job")
    parser.parse_args(argv)
    return _check()
