"""The README's example runs as written, in a fresh interpreter, and does what its comments say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _example_block() -> str:
    """The first ```python block under the README's `## Example` heading."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Example\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match is not None, "README: no ```python block under ## Example"
    return match.group(1)


def test_readme_example_runs_and_its_comments_hold(tmp_path: Path) -> None:
    code = _example_block()
    assert len(code.strip().splitlines()) <= 12  # "a 10-line example"
    # what the comments claim, checked after the block has run in the same namespace
    checks = """
import torch
assert y_shared.shape == (16, 2) and y_each.shape == (16, 2)
# one weight set per sample: each row equals the shared call with that sample's task. float32 rows
# from the batched and the shared path differ by rounding (~1e-7 relative); a sample given another
# task's weights differs by O(0.1), so 1e-5 / 1e-6 tells them apart.
cond = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(1))
each = model(x, cond)
for i in range(16):
    torch.testing.assert_close(each[i], model(x[i : i + 1], cond[i])[0], rtol=1e-5, atol=1e-6)
# the materialized module computes what the hypernetwork's task-2 weights compute
torch.testing.assert_close(plain(x), model(x, torch.tensor(2)), rtol=1e-5, atol=1e-6)
# the saved file restores the model: spoil the weights, load, same outputs again
before = model(x, cond).detach()
with torch.no_grad():
    for p in model.parameters():
        p.add_(1.0)
assert not torch.allclose(model(x, cond), before)
hn.load("model.safetensors", model)
torch.testing.assert_close(model(x, cond), before, rtol=0, atol=0)
print("ok")
"""
    res = subprocess.run(
        [sys.executable, "-c", code + checks], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("ok")
