"""Choosing which parameters of a module a hypernetwork generates (`generate=`).

A selector is `None` (all parameters), a string (exact name or glob pattern such as `"fc*.weight"`
or `"layers.*"`), a module type (`nn.Linear`: every parameter owned directly by such a module), or
a sequence mixing these. Every item must match at least one parameter: a typo fails loudly.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Union

from torch import nn

Selector = Union[None, str, type, Sequence[Union[str, type]]]


def select_parameters(module: nn.Module, generate: Selector) -> list[str]:
    """Names of the parameters of `module` selected by `generate`, in `named_parameters()` order."""
    all_names = [name for name, _ in module.named_parameters()]
    if not all_names:
        raise ValueError(f"generate: the module {type(module).__name__} has no parameters to generate")
    if generate is None:
        return all_names
    items: Sequence[str | type] = [generate] if isinstance(generate, (str, type)) else list(generate)
    if len(items) == 0:
        raise ValueError("generate: an empty selection generates nothing; pass None to generate all parameters")
    owned = _owned_parameters(module)
    chosen: set[str] = set()
    for item in items:
        if isinstance(item, str):
            hits = {n for n in all_names if n == item or fnmatch.fnmatchcase(n, item)}
            # A module name (or pattern on module names) selects that module's parameters too.
            hits |= {n for n in all_names if fnmatch.fnmatchcase(n.rpartition(".")[0], item)}
            what = f"pattern {item!r}"
        elif isinstance(item, type) and issubclass(item, nn.Module):
            hits = {n for mod_name, mod in module.named_modules() if isinstance(mod, item) for n in owned[mod_name]}
            what = f"module type {item.__name__}"
        else:
            raise TypeError(f"generate: items must be names, glob patterns or nn.Module types, got {item!r}")
        if not hits:
            raise ValueError(
                f"generate: {what} matches no parameter of {type(module).__name__}; "
                f"parameters are {_preview(all_names)}"
            )
        chosen |= hits
    return [n for n in all_names if n in chosen]


def _owned_parameters(module: nn.Module) -> dict[str, list[str]]:
    """`{module_name: [full names of the parameters it owns directly]}`."""
    out: dict[str, list[str]] = {}
    for mod_name, mod in module.named_modules():
        prefix = mod_name + "." if mod_name else ""
        out[mod_name] = [prefix + p for p, _ in mod.named_parameters(recurse=False)]
    return out


def _preview(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)} in all)"
