"""The shared-weights path hands the target views of the generated vector, never a copy of it.

In the shared training step (`benchmarks/peers.py`, issue 16) the generated vector `theta: [P]` is
the output of the hypernetwork's `64 -> P` layer; every copy of it (a `clone`, a `contiguous`, a
dtype round trip, a `cat` of the pieces) is a fresh `[P]` buffer in the forward and another in the
backward. These tests check the property by storage and by the ops dispatched, not by time.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

import hypernet as hn


def _model(sizes: tuple[int, ...] = (12, 7, 5, 3)) -> hn.HyperModel:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers += [nn.Linear(sizes[i], sizes[i + 1]), nn.ReLU()]
    target = hn.TargetNetwork(nn.Sequential(*layers[:-1]))
    hyper = hn.MLPHyperNetwork(4, target.spec, hidden=(6,))
    return hn.HyperModel(target, hyper, hn.TaskEmbedding(3, 4))


def test_target_layers_read_views_of_the_generated_vector() -> None:
    model = _model()
    generated: list[Tensor] = []
    model.hypernetwork.register_forward_hook(lambda _m, _i, out: generated.append(out))
    seen: dict[str, tuple[int, int, tuple[int, ...]]] = {}

    def record(name: str) -> Any:
        def hook(layer: nn.Module, _inputs: Any) -> None:
            for leaf in ("weight", "bias"):
                t = getattr(layer, leaf)
                seen[f"{name}.{leaf}"] = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))

        return hook

    for name, layer in model.target.module.named_modules():
        if isinstance(layer, nn.Linear):
            layer.register_forward_pre_hook(record(name))
    model(torch.randn(5, 12), torch.tensor(1))
    (theta,) = generated
    assert theta.shape == (model.target.spec.numel,)
    # every generated tensor the layers read lies in theta's own storage, at the offset the spec gives
    assert sorted(seen) == sorted(model.target.spec.names)
    for info in model.target.spec:
        ptr, offset, shape = seen[info.name]
        assert ptr == theta.untyped_storage().data_ptr(), f"{info.name}: a copy, not a view of theta"
        assert offset == theta.storage_offset() + model.target.spec.slice(info.name).start
        assert shape == tuple(info.shape)


class _FreshOutputs(TorchDispatchMode):
    """Records (op name, numel) of every op output held in new memory (views of an input are not)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, int]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {t.untyped_storage().data_ptr() for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, Tensor)}
        for t in pytree.tree_leaves(out):
            if isinstance(t, Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.ops.append((str(func), t.numel()))
        return out


def test_forward_makes_one_vector_of_p_numbers() -> None:
    """Only the output layer writes P numbers to new memory in the forward: no op copies theta whole (a `.clone()`,
    `.contiguous()`, `.to()` or `+ 0` on it would be a second P-sized output). The sizes are chosen so
    that no other tensor of the forward has P elements (the head's bias, a parameter, is not an op output)."""
    model = _model()
    P = model.target.spec.numel
    x = torch.randn(5, 12)
    others = [p for p in model.parameters() if p is not model.hypernetwork.head.bias]  # the bias is [P]
    assert P not in {p.numel() for p in others} | {x.numel(), 5 * 7, 5 * 5, 5 * 3}
    with _FreshOutputs() as rec:
        model(x, torch.tensor(2))
    full = [op for op, n in rec.ops if n == P]
    assert len(full) == 1, f"ops with P = {P} outputs: {full}"
