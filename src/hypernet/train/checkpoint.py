"""Checkpoints: tensors in safetensors (never pickle), the rest in a small JSON beside them.

`NAME-STEP.safetensors` holds the model state, optimizer tensors and RNG states;
`NAME-STEP.json` holds the step, optimizer hyperparameters and the safetensors file's SHA-256.
Both are written atomically, the JSON last, so a checkpoint counts only once complete.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from hypernet.train.atomic import atomic_write, write_json


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, or does not match what it is loaded into."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for idx, per_param in state["state"].items():
        plain["state"][str(idx)] = {}
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain["state"][str(idx)][key] = value
    return tensors, plain


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(k): dict(v) for k, v in plain["state"].items()}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": plain["param_groups"]}


def save_checkpoint(
    folder: Path,
    name: str,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    generator: torch.Generator | None,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write checkpoint `name` at `step` into `folder`; keep the `keep` newest; return the JSON path."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta: dict[str, Any] = {"name": name, "step": step, "extra": extra or {}}
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = _flatten_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if generator is not None:
        tensors["rng.generator"] = generator.get_state()
    base = folder / f"{name}-{step:08d}"
    tensor_path = base.with_suffix(".safetensors")
    atomic_write(tensor_path, lambda tmp: save_file(tensors, str(tmp)))
    meta["sha256"] = _sha256(tensor_path)
    json_path = base.with_suffix(".json")
    write_json(json_path, meta)
    for old in list_checkpoints(folder, name)[:-keep]:
        old.unlink(missing_ok=True)
        old.with_suffix(".safetensors").unlink(missing_ok=True)
    return json_path


_CHECKPOINT_FILE = re.compile(r"^(.+)-(\d{8})\.(json|safetensors)$")


def prune_checkpoints(folder: Path, keep: int = 2) -> list[Path]:
    """Remove what a killed run left in `folder`: tensor files whose JSON was never written (a
    checkpoint counts only once its JSON exists) and, per name, complete checkpoints older than
    the `keep` newest (a kill between writing a new one and removing the oldest). Returns what
    was removed."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    names = set()
    for path in sorted(folder.iterdir()):
        match = _CHECKPOINT_FILE.match(path.name)
        if match is None:
            continue
        names.add(match.group(1))
        if match.group(3) == "safetensors" and not path.with_suffix(".json").exists():
            path.unlink()
            removed.append(path)
    for name in sorted(names):
        for old in list_checkpoints(folder, name)[:-keep]:
            for path in (old, old.with_suffix(".safetensors")):
                if path.exists():
                    path.unlink()
                    removed.append(path)
    return removed


def list_checkpoints(folder: Path, name: str) -> list[Path]:
    """Complete checkpoints (their JSON written) of `name`, oldest first."""
    pattern = re.compile(re.escape(name) + r"-(\d{8})\.json$")
    found = [p for p in folder.glob(f"{name}-*.json") if pattern.fullmatch(p.name)] if folder.exists() else []
    return sorted(found)


def load_checkpoint(
    json_path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Restore model, optimizer, RNG states from a checkpoint; return its metadata.

    Raises `CheckpointError` naming the file if it is missing, truncated or altered.
    """
    json_path = Path(json_path)
    tensor_path = json_path.with_suffix(".safetensors")
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {json_path}: unreadable metadata ({exc})") from exc
    if not tensor_path.exists():
        raise CheckpointError(f"checkpoint {tensor_path}: file missing")
    if _sha256(tensor_path) != meta.get("sha256"):
        raise CheckpointError(f"checkpoint {tensor_path}: truncated or altered (SHA-256 does not match)")
    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"checkpoint {tensor_path}: cannot be read ({exc})") from exc
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {tensor_path}: does not fit the model ({exc})") from exc
    if optimizer is not None and "optimizer" in meta:
        optimizer.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    torch.set_rng_state(tensors["rng.torch"])
    if generator is not None and "rng.generator" in tensors:
        generator.set_state(tensors["rng.generator"])
    return dict(meta)
