"""Continual learning with a task-conditioned hypernetwork (von Oswald et al., ICLR 2020).

One hypernetwork `h(e; Θ)` generates the whole target network of task `t` from a task embedding
`e_t`. While task `T` is learned, the output regularizer

    β/(T−1) · Σ_{t<T} ‖h(e_t; Θ*) − h(e_t; Θ + ΔΘ)‖²

keeps the weights generated for every earlier task where they were before task `T` (`Θ*`), so
nothing is forgotten although the earlier data are gone. The targets `h(e_t; Θ*)` are stored
(`[T−1, P]` numbers) or recomputed from a frozen copy of `Θ*` (its parameters, not `P` per task).
`ΔΘ` is an optional look-ahead: the step the task loss alone would take. Each embedding is trained
on its own task and frozen after it.

Evaluation: task-incremental (the task id is given) and class-incremental, where the task is
inferred as the one whose generated network is most confident (lowest predictive entropy).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from hypernet.target import TargetNetwork

TargetMode = Literal["stored", "frozen-copy"]


def output_regularizer(
    hypernetwork: nn.Module,
    embeddings: Tensor,
    targets: Tensor,
    beta: float,
    delta: dict[str, Tensor] | None = None,
) -> Tensor:
    """`β/K · Σ_k ‖targets_k − h(embeddings_k; Θ + ΔΘ)‖²` over the `K` rows given.

    `embeddings: [K, E]` (earlier tasks' embeddings, held fixed), `targets: [K, P]` (their weights
    under `Θ*`), `delta`: parameter name -> look-ahead step `ΔΘ` added to the hypernetwork's
    parameter of that name (`None`: no look-ahead). With all earlier tasks, `K = T − 1`; with a
    random subset, the mean over it is an unbiased estimate of the full term.
    """
    if embeddings.ndim != 2 or targets.ndim != 2 or embeddings.shape[0] != targets.shape[0]:
        raise ValueError(
            f"embeddings [K, E] and targets [K, P] must pair up, got {list(embeddings.shape)} and {list(targets.shape)}"
        )
    if embeddings.shape[0] == 0:
        return targets.new_zeros(())
    if delta:
        params = dict(hypernetwork.named_parameters())
        unknown = set(delta) - set(params)
        if unknown:
            raise ValueError(f"delta: no hypernetwork parameters named {sorted(unknown)}")
        moved = {name: params[name] + step for name, step in delta.items()}
        weights: Tensor = functional_call(hypernetwork, moved, (embeddings,), strict=False)
    else:
        weights = hypernetwork(embeddings)
    return beta * (weights - targets).pow(2).sum() / embeddings.shape[0]


def lookahead_step(loss: Tensor, hypernetwork: nn.Module, lr: float) -> dict[str, Tensor]:
    """`ΔΘ = −lr · ∂loss/∂Θ` (detached): the plain gradient step the task loss alone would take."""
    named = [(n, p) for n, p in hypernetwork.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], retain_graph=True, allow_unused=True)
    return {n: -lr * g.detach() for (n, _), g in zip(named, grads, strict=True) if g is not None}


class HnetContinual(nn.Module):
    """A task-conditioned hypernetwork learning tasks one after another.

    `hypernetwork` maps `[..., E] -> [..., P]` weights of `target`; one embedding `[E]` per task
    (N(0, `embedding_std`²)). Call `end_task(t)` after task `t`: it freezes `e_t` and takes the
    snapshot `Θ*` used while the next tasks are learned. All state (targets, frozen copy, the
    number of tasks done) lives in buffers/parameters, so a checkpoint of the module restores it.
    """

    targets: Tensor
    tasks_done: Tensor

    def __init__(
        self,
        target: TargetNetwork,
        hypernetwork: nn.Module,
        num_tasks: int,
        embedding_dim: int,
        *,
        beta: float = 0.01,
        target_mode: TargetMode = "stored",
        embedding_std: float = 1.0,
    ) -> None:
        super().__init__()
        if num_tasks <= 0 or embedding_dim <= 0:
            raise ValueError(f"num_tasks and embedding_dim must be positive, got {num_tasks}, {embedding_dim}")
        if target_mode not in ("stored", "frozen-copy"):
            raise ValueError(f"target_mode: expected 'stored' or 'frozen-copy', got {target_mode!r}")
        if beta < 0:
            raise ValueError(f"beta: must be >= 0, got {beta}")
        self.target, self.hypernetwork = target, hypernetwork
        self.num_tasks, self.beta, self.target_mode = num_tasks, float(beta), target_mode
        self.embeddings = nn.ParameterList(
            nn.Parameter(torch.randn(embedding_dim) * embedding_std) for _ in range(num_tasks)
        )
        p = target.spec.numel
        self.register_buffer("tasks_done", torch.zeros((), dtype=torch.long))
        # stored targets: one row per task, filled by end_task (zero-size in frozen-copy mode)
        self.register_buffer("targets", torch.zeros(num_tasks if target_mode == "stored" else 0, p))
        self.frozen: nn.Module | None = None
        if target_mode == "frozen-copy":
            self.frozen = copy.deepcopy(hypernetwork).requires_grad_(False)

    def weights(self, task: int) -> Tensor:
        """Generated weights `[P]` of `task`."""
        out: Tensor = self.hypernetwork(self.embeddings[task])
        return out

    def all_weights(self, tasks: Sequence[int] | None = None) -> Tensor:
        """Generated weights `[K, P]` of `tasks` (default: all), in one hypernetwork call."""
        ids = range(self.num_tasks) if tasks is None else tasks
        out: Tensor = self.hypernetwork(torch.stack([self.embeddings[t] for t in ids]))
        return out

    def forward(self, x: Tensor, task: int) -> Tensor:
        """`x: [B, ...] -> target(x; h(e_task))`."""
        out: Tensor = self.target(x, self.weights(task))
        return out

    def trainable(self, task: int) -> list[nn.Parameter]:
        """What learns during `task`: the hypernetwork and `e_task` only (earlier embeddings stay frozen)."""
        return [p for p in self.hypernetwork.parameters() if p.requires_grad] + [self.embeddings[task]]

    def snapshot_targets(self, tasks: Sequence[int]) -> Tensor:
        """`h(e_t; Θ*)` for `tasks`: `[K, P]`, from the stored rows or the frozen copy."""
        if self.target_mode == "stored":
            return self.targets[list(tasks)]
        assert self.frozen is not None
        with torch.no_grad():
            out: Tensor = self.frozen(torch.stack([self.embeddings[t].detach() for t in tasks]))
        return out

    def regularizer(
        self,
        task: int,
        *,
        subset: int = 0,
        generator: torch.Generator | None = None,
        delta: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """The output regularizer while learning `task` (zero for the first task).

        `subset > 0`: a random draw (by `generator`) of that many earlier tasks instead of all.
        """
        earlier = list(range(task))
        if subset and subset < len(earlier):
            pick = torch.randperm(len(earlier), generator=generator)[:subset]
            earlier = [earlier[i] for i in sorted(pick.tolist())]
        if not earlier or self.beta == 0:
            return self.targets.new_zeros(())
        emb = torch.stack([self.embeddings[t].detach() for t in earlier])
        return output_regularizer(self.hypernetwork, emb, self.snapshot_targets(earlier), self.beta, delta)

    @torch.no_grad()
    def end_task(self, task: int) -> None:
        """After `task`: freeze its embedding (it is no longer in `trainable`) and take `Θ*` for the next."""
        if self.target_mode == "stored":
            self.targets[: task + 1] = self.all_weights(range(task + 1))
        else:
            assert self.frozen is not None
            self.frozen.load_state_dict(self.hypernetwork.state_dict())
        self.tasks_done.fill_(task + 1)

    def target_memory_bytes(self, tasks_seen: int | None = None) -> int:
        """Bytes the regularizer's targets take once `tasks_seen` tasks are done (default: all but the
        last, the most it ever holds): `(T−1)·P` numbers stored, or the frozen copy's parameters."""
        k = self.num_tasks - 1 if tasks_seen is None else tasks_seen
        if self.target_mode == "stored":
            return k * self.target.spec.numel * self.targets.element_size()
        assert self.frozen is not None
        return sum(p.numel() * p.element_size() for p in self.frozen.parameters())


def predictive_entropy(logits: Tensor) -> Tensor:
    """Entropy of `softmax(logits)` over the last axis: `[..., C] -> [...]` (nats)."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def infer_task(logits_per_task: Tensor) -> Tensor:
    """Class-incremental task inference: `logits_per_task: [T, B, C]` (every task's network on the
    same batch) -> `[B]` the task whose network is most confident (lowest predictive entropy)."""
    if logits_per_task.ndim != 3:
        raise ValueError(f"logits_per_task: expected [T, B, C], got {list(logits_per_task.shape)}")
    out: Tensor = predictive_entropy(logits_per_task).argmin(0)
    return out


def class_incremental_predict(logits_per_task: Tensor, classes: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """Global class and inferred task for a batch: `[T, B, C]` -> (`[B]` labels, `[B]` tasks).

    `classes[t][c]` is the global label of task `t`'s output `c`.
    """
    task = infer_task(logits_per_task)
    local = logits_per_task[task, torch.arange(logits_per_task.shape[1])].argmax(-1)
    table = torch.full((len(classes), max(len(c) for c in classes)), -1, dtype=torch.long)
    for t, cs in enumerate(classes):
        table[t, : len(cs)] = torch.tensor(list(cs), dtype=torch.long)
    table = table.to(task.device)
    return table[task, local], task
