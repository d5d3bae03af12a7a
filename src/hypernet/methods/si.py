"""Synaptic intelligence (Zenke et al. 2017): each parameter's importance is its share of the loss
decrease along the training path, `ω_i = Σ_tasks W_i / (Δ_i² + ξ)` with `W_i = −Σ_steps g_i Δθ_i`
and `Δ_i` the parameter's total change over the task; the penalty is `c · Σ_i ω_i (θ_i − θ*_i)²`.

`g` is the gradient of the loss that was optimised (penalty included, as in van de Ven & Tolias
2019's code). The path integral is accumulated from outside the training loop: `track(theta)` at
the start of each step adds the previous step's `−g·Δθ` (its gradient kept by `hook_into`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SIPenalty(nn.Module):
    """SI's running path integral and penalty over `num_params` numbers; state in buffers."""

    omega: Tensor
    anchor: Tensor
    path: Tensor
    prev: Tensor
    last_grad: Tensor
    count: Tensor

    def __init__(self, num_params: int, c: float, xi: float = 0.1) -> None:
        super().__init__()
        if c < 0 or xi <= 0:
            raise ValueError(f"c must be >= 0 and xi > 0, got {c}, {xi}")
        self.c, self.xi = float(c), float(xi)
        for name in ("omega", "anchor", "path", "prev", "last_grad"):
            self.register_buffer(name, torch.zeros(num_params))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def forward(self, theta: Tensor) -> Tensor:
        if int(self.count) == 0:
            return theta.new_zeros(())
        return self.c * (self.omega * (theta - self.anchor).pow(2)).sum()

    @torch.no_grad()
    def start_task(self, theta: Tensor) -> None:
        """Before a task's first step: the path starts at `theta`."""
        self.prev.copy_(theta)
        self.anchor.copy_(theta)
        self.path.zero_()
        self.last_grad.zero_()

    def hook_into(self, params: list[nn.Parameter]) -> None:
        """Keep each backward's gradient of `params` (flattened in order) in `last_grad`, a buffer,
        so that a checkpoint taken between backward and the next step carries it."""
        offset = 0
        self._where: dict[int, tuple[int, int]] = {}  # id(param) -> its slice of `last_grad`, for `keep`
        for p in params:
            n = p.numel()
            self._where[id(p)] = (offset, offset + n)

            def keep(g: Tensor, lo: int = offset, hi: int = offset + n) -> None:
                with torch.no_grad():
                    self.last_grad[lo:hi] = g.reshape(-1)

            p.register_hook(keep)
            offset += n
        if offset != self.last_grad.numel():
            raise ValueError(f"params: {offset} numbers, the penalty was built for {self.last_grad.numel()}")

    @torch.no_grad()
    def keep(self, params: list[Tensor], grads: list[Tensor]) -> None:
        """Put `grads` of `params` (some of those given to `hook_into`) in `last_grad`, replacing
        what the hooks kept: on several processes, the gradients averaged over them."""
        for p, g in zip(params, grads, strict=True):
            where = self._where.get(id(p))
            if where is not None:
                self.last_grad[where[0] : where[1]] = g.reshape(-1)

    @torch.no_grad()
    def track(self, theta: Tensor) -> None:
        """Add the last step's contribution `−g·Δθ`; `theta` is the value after that step."""
        self.path -= self.last_grad * (theta - self.prev)
        self.prev.copy_(theta)
        self.last_grad.zero_()

    @torch.no_grad()
    def consolidate(self, theta: Tensor) -> None:
        """After a task (its last step tracked): fold the path into `ω` and anchor at `theta`."""
        delta = theta - self.anchor
        self.omega += self.path / (delta.pow(2) + self.xi)
        self.anchor.copy_(theta)
        self.path.zero_()
        self.count.fill_(int(self.count) + 1)
