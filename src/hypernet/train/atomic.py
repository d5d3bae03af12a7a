"""Atomic file writes for runs: see `hypernet.atomic` (kept in the core so that `hn.save` needs no
training dependencies)."""

from hypernet.atomic import atomic_write, write_json, write_text

__all__ = ["atomic_write", "write_json", "write_text"]
