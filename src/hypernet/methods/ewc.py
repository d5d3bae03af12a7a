"""Elastic weight consolidation (Kirkpatrick et al. 2017) and its online variant (Schwarz et al.
2018): a quadratic pull of every parameter toward its value after earlier tasks, weighted by the
diagonal Fisher information there.

EWC: `λ/2 · Σ_{t<T} Σ_i F_{t,i} (θ_i − θ*_{t,i})²`, one Fisher and anchor per earlier task.
Online EWC: one running `F̃ ← γ F̃ + F_t` and the latest anchor: `λ/2 · Σ_i F̃_i (θ_i − θ*_i)²`.
The Fisher is `E_x[(∂ log p(ŷ|x)/∂θ)²]` with `ŷ` the network's own prediction (as in van de Ven
& Tolias 2019's code), computed from per-sample gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap


def flat_params(params: list[nn.Parameter]) -> Tensor:
    """The parameters as one vector `[N]` (differentiable)."""
    return torch.cat([p.reshape(-1) for p in params])


def fisher_diagonal(
    module: nn.Module,
    logits_fn: Callable[[nn.Module, dict[str, Tensor], Tensor], Tensor],
    names: list[str],
    x: Tensor,
    chunk: int = 256,
) -> Tensor:
    """Diagonal Fisher `[N]` of the parameters `names` of `module` (in that order) on inputs `x: [n, ...]`.

    `logits_fn(module, params, xb) -> [b, C]` runs `module` with `params` (a name -> tensor dict,
    through `functional_call`) on a batch. Per-sample gradients of `log p(argmax | x)` by `vmap`.
    """
    base = {n: p.detach() for n, p in module.named_parameters() if n in names}
    if len(base) != len(names):
        raise ValueError(f"names: {sorted(set(names) - set(base))} are not parameters of the module")

    def log_p_pred(params: dict[str, Tensor], xi: Tensor) -> Tensor:
        logits = logits_fn(module, params, xi.unsqueeze(0))[0]
        pred = logits.detach().argmax(-1, keepdim=True)  # gather, not indexing: vmap has no data-dependent indexing
        return torch.log_softmax(logits, -1).gather(-1, pred).squeeze(-1)

    per_sample = vmap(grad(log_p_pred), in_dims=(None, 0))
    total = torch.zeros(sum(base[n].numel() for n in names), device=x.device)
    for start in range(0, x.shape[0], chunk):
        g = per_sample(base, x[start : start + chunk])
        total += torch.cat([g[n].reshape(g[n].shape[0], -1) for n in names], 1).pow(2).sum(0)
    return total / max(1, x.shape[0])


def call(module: nn.Module, params: dict[str, Tensor], *args: object) -> Tensor:
    """`module(*args)` with some parameters replaced (`functional_call`, the rest as they are)."""
    out: Tensor = functional_call(module, params, args, strict=False)
    return out


class EWCPenalty(nn.Module):
    """EWC's penalty over `num_params` numbers for up to `num_tasks` tasks (`online`: one running term).

    State in buffers, so a checkpoint of a module holding it restores it.
    """

    fisher: Tensor
    anchor: Tensor
    count: Tensor

    def __init__(self, num_params: int, num_tasks: int, lam: float, online: bool = False, gamma: float = 1.0) -> None:
        super().__init__()
        if lam < 0 or not 0 < gamma <= 1:
            raise ValueError(f"lam must be >= 0 and gamma in (0, 1], got {lam}, {gamma}")
        self.lam, self.online, self.gamma = float(lam), online, float(gamma)
        rows = 1 if online else num_tasks
        self.register_buffer("fisher", torch.zeros(rows, num_params))
        self.register_buffer("anchor", torch.zeros(rows, num_params))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def forward(self, theta: Tensor) -> Tensor:
        """`theta: [N]` -> the penalty (zero before the first `consolidate`)."""
        k = int(self.count)
        if k == 0:
            return theta.new_zeros(())
        rows = 1 if self.online else k
        return 0.5 * self.lam * (self.fisher[:rows] * (theta - self.anchor[:rows]).pow(2)).sum()

    @torch.no_grad()
    def consolidate(self, theta: Tensor, fisher: Tensor) -> None:
        """After a task: add its Fisher `[N]` and anchor `theta: [N]`."""
        k = int(self.count)
        if self.online:
            self.fisher[0] = self.gamma * self.fisher[0] + fisher if k else fisher
            self.anchor[0] = theta
        else:
            if k >= self.fisher.shape[0]:
                raise ValueError(f"consolidate: already holds {k} tasks, the most it was built for")
            self.fisher[k], self.anchor[k] = fisher, theta
        self.count.fill_(k + 1)
