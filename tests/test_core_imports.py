"""The core (`import hypernet`: targets, hypernetworks, kernels) needs none of the cli extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKER = """
import importlib.abc, sys

BLOCKED = ("matplotlib", "sklearn", "rich", "platformdirs", "scipy")


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"blocked for this test: {name}", name=name)
        return None


sys.meta_path.insert(0, Block())
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    script = BLOCKER + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)


def test_core_imports_and_runs_without_the_cli_extra() -> None:
    res = _run(
        """
        import torch
        from torch import nn
        import hypernet as hn
        from hypernet import kernels

        target = hn.TargetNetwork(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
        model = hn.HyperModel(target, hn.MLPHyperNetwork(3, target.spec, hidden=(16,)))
        y = model(torch.randn(5, 4), torch.randn(5, 3))
        assert y.shape == (5, 2)
        k = kernels.hyper_ntk(torch.randn(6, 4), torch.randn(6, 3))
        assert k.shape == (6, 6)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not loaded, loaded
        print("core ok")
        """
    )
    assert res.returncode == 0 and "core ok" in res.stdout, res.stderr


def test_blocker_really_blocks() -> None:
    # the test above would pass vacuously if the finder did not stop imports
    res = _run("import matplotlib\n")
    assert res.returncode != 0 and "blocked for this test: matplotlib" in res.stderr


def test_command_line_without_the_cli_extra_says_what_to_install() -> None:
    res = _run("from hypernet.cli import main\nraise SystemExit(main(['list']))\n")
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'hypernet[cli]'" in lines[0], res.stderr
