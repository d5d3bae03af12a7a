"""`hn.save(model, path)` / `hn.load(path, model)`: a model's state in safetensors, written atomically.

Only tensors are stored (never pickled code), with a little metadata (format, class, names). The
file holds each tensor once: names that share memory (tied weights) are stored under one name and
filled in again on load. Loading checks every name and shape first and changes the model only
when all of them match, so a wrong file never leaves a model half-loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from hypernet.atomic import atomic_write

FORMAT = "hypernet-state"
VERSION = "1"


def _storage_key(t: Tensor) -> tuple[int, int, tuple[int, ...], tuple[int, ...]]:
    return (t.untyped_storage().data_ptr(), int(t.storage_offset()), tuple(t.shape), tuple(t.stride()))


def _aliases(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Split `state` into the tensors to store (first name of each) and `{alias: stored name}`."""
    stored: dict[str, Tensor] = {}
    first: dict[tuple[int, int, tuple[int, ...], tuple[int, ...]], str] = {}
    aliases: dict[str, str] = {}
    for name, t in state.items():
        key = _storage_key(t)
        if t.numel() and key in first:
            aliases[name] = first[key]
        else:
            first.setdefault(key, name)
            stored[name] = t
    return stored, aliases


def save(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write `model.state_dict()` to `path` (safetensors), atomically: `path` is either the old file or
    the complete new one, never half-written. Returns the path."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    out = Path(path)
    if out.is_dir():
        raise IsADirectoryError(f"path: {out} is a folder; give a file name such as {out / 'model.safetensors'}")
    stored, aliases = _aliases(model.state_dict())
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in stored.items()}
    meta = {"format": FORMAT, "version": VERSION, "class": type(model).__name__}
    meta.update({f"alias:{a}": n for a, n in aliases.items()})
    atomic_write(out, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return out


def load(path: str | os.PathLike[str], model: nn.Module, strict: bool = True) -> nn.Module:
    """Load a file written by `save` into `model` (in place) and return it.

    Raises `FileNotFoundError` / `ValueError` naming the file and the first mismatching names or shapes;
    `model` is unchanged unless everything matches. `strict=False` loads what matches and ignores
    names that the file or the model lacks (shapes must still match).
    """
    if isinstance(path, nn.Module) or not isinstance(model, nn.Module):
        raise TypeError("load: call it as hn.load(path, model), a file path first and the nn.Module second")
    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(f"path: no file at {src}")
    try:
        with safe_open(str(src), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"path: {src} is not a readable safetensors file ({err})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"path: {src} was not written by hypernet.save (metadata format={meta.get('format')!r})")
    for key, value in meta.items():
        if key.startswith("alias:") and value in tensors:
            tensors[key.removeprefix("alias:")] = tensors[value]
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if strict and (missing or unexpected):
        raise ValueError(
            f"path: {src} does not fit this {type(model).__name__} (saved from a {meta.get('class')}): "
            f"missing {_names(missing)}, unexpected {_names(unexpected)}"
        )
    wrong = [
        f"{k} {list(tensors[k].shape)} vs {list(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    if wrong:
        raise ValueError(f"path: {src} has tensors of other shapes than the model (file vs model): {_names(wrong)}")
    with torch.no_grad():
        model.load_state_dict({k: v for k, v in tensors.items() if k in expected}, strict=strict)
    return model


def _names(names: list[str], limit: int = 5) -> str:
    if not names:
        return "none"
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")
