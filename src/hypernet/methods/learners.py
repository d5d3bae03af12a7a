"""Continual learners behind one interface, so one harness trains and evaluates them all.

A `Learner` is an `nn.Module` whose whole state (weights, penalties, snapshots) is in its
`state_dict`, so the training loop's checkpoints restore it mid-task. Per task `t` the harness
calls `start_task(t)`, trains `trainable(t)` on `loss(x, y, t, generator)`, then `end_task(t, x)`
with training inputs of task `t` (for the Fisher). A `joint` learner instead trains once on
batches mixing every task (`task` then a tensor of ids `[B]`).

The methods: the hypernetwork with its output regularizer (`HnetLearner`), fine-tuning, EWC,
online EWC, SI (all on `MultiHeadNet`: a shared trunk, one output head per task), one network per
task (`PerTaskNets`) and joint training (`FineTune(..., joint=True)`).

On several processes (`distribute`), DDP wraps the whole objective (`Objective`: data term and
penalty in one forward), each process computing its part of the batch; see `distribute`.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from hypernet.methods.continual import HnetContinual, lookahead_step
from hypernet.methods.ewc import EWCPenalty, call, fisher_diagonal, flat_params
from hypernet.methods.si import SIPenalty
from hypernet.train import distributed

Logged = dict[str, float]


def mlp(d_in: int, hidden: Sequence[int], d_out: int) -> nn.Sequential:
    """`d_in -> hidden... -> d_out` with ReLU."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(d_in, h), nn.ReLU()]
        d_in = h
    return nn.Sequential(*layers, nn.Linear(d_in, d_out))


class MultiHeadNet(nn.Module):
    """`x: [B, d_in] -> [B, C]`: a shared trunk and one `C`-way head per task (task-incremental)."""

    def __init__(self, d_in: int, hidden: Sequence[int], num_classes: int, num_tasks: int) -> None:
        super().__init__()
        self.num_classes, self.num_tasks = num_classes, num_tasks
        self.net = mlp(d_in, hidden, num_classes * num_tasks)

    def forward(self, x: Tensor, task: int | Tensor) -> Tensor:
        out = self.net(x).view(x.shape[0], self.num_tasks, self.num_classes)
        if isinstance(task, Tensor) and task.ndim == 1:
            return out[torch.arange(x.shape[0], device=x.device), task]
        return out[:, int(task)]


class Learner(nn.Module):
    """Base: plain cross-entropy on the task's outputs; nothing kept between tasks."""

    joint: bool = False
    # every parameter gets a gradient at every step of a task (DDP then need not search for unused ones)
    every_parameter_used: bool = False

    def trainable(self, task: int) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def loss(
        self, x: Tensor, y: Tensor, task: int | Tensor, generator: torch.Generator, weight: float = 1.0
    ) -> tuple[Tensor, Logged]:
        """The objective of one step on batch `x: [B, ...]`, `y: [B]`, and what to log.

        `weight` scales the data term only (`data_loss`), never a penalty: on several processes it
        is this process's share of the global batch, so that the processes' mean is the batch's."""
        return self.data_loss(x, y, task, weight), {}

    def data_loss(self, x: Tensor, y: Tensor, task: int | Tensor, weight: float = 1.0) -> Tensor:
        """Mean cross-entropy on `x: [B, ...]`, `y: [B]`, times `weight` (not multiplied at 1, so a
        one-process run computes exactly what it always did)."""
        ce = F.cross_entropy(self(x, task), y)
        return ce if weight == 1.0 else ce * weight

    def reduced_gradients(self, params: list[Tensor], grads: list[Tensor]) -> None:
        """Called on several processes with the gradients of `params` averaged over the processes
        (a DDP bucket's), before the optimizer step; for methods that keep gradients (SI)."""

    def start_task(self, task: int) -> None:
        """Before task `task`'s first step."""

    def end_task(self, task: int, x: Tensor, generator: torch.Generator) -> None:
        """After task `task`, with some of its training inputs `x`."""

    def num_trainable(self) -> int:
        """Numbers that are trained (over all tasks)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def memory_bytes(self) -> int:
        """Bytes kept for earlier tasks beyond the trained weights (targets, Fisher, anchors)."""
        return 0


class FineTune(Learner):
    """Sequential fine-tuning of a `MultiHeadNet` (the lower bound), or, with `joint`, training on
    every task at once (the upper bound)."""

    every_parameter_used = True  # one trunk, and all heads computed for every sample

    def __init__(self, net: MultiHeadNet, joint: bool = False) -> None:
        super().__init__()
        self.model, self.joint = net, joint

    def forward(self, x: Tensor, task: int | Tensor) -> Tensor:
        out: Tensor = self.model(x, task)
        return out


class EWC(FineTune):
    """EWC (`online=False`) or online EWC on a `MultiHeadNet`; the Fisher from `end_task`'s inputs."""

    def __init__(self, net: MultiHeadNet, lam: float, online: bool = False, gamma: float = 1.0) -> None:
        super().__init__(net)
        self.names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        n = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.penalty = EWCPenalty(n, net.num_tasks, lam, online, gamma)

    def loss(
        self, x: Tensor, y: Tensor, task: int | Tensor, generator: torch.Generator, weight: float = 1.0
    ) -> tuple[Tensor, Logged]:
        task_loss = self.data_loss(x, y, task, weight)
        # the same on every process (same weights, Fisher, anchors): DDP's mean of its gradient is itself
        reg = self.penalty(flat_params(self.trainable(0)))
        return task_loss + reg, {"task_loss": float(task_loss.detach()), "reg": float(reg.detach())}

    def end_task(self, task: int, x: Tensor, generator: torch.Generator) -> None:
        fisher = fisher_diagonal(self.model, lambda m, p, xb: call(m, p, xb, task), self.names, x)
        self.penalty.consolidate(flat_params(self.trainable(0)).detach(), fisher)

    def memory_bytes(self) -> int:
        rows = 1 if self.penalty.online else self.penalty.fisher.shape[0] - 1  # the most ever used while training
        return 2 * rows * self.penalty.fisher.shape[1] * self.penalty.fisher.element_size()


class SI(FineTune):
    """Synaptic intelligence on a `MultiHeadNet`."""

    def __init__(self, net: MultiHeadNet, c: float, xi: float = 0.1) -> None:
        super().__init__(net)
        params = self.trainable(0)
        self.penalty = SIPenalty(sum(p.numel() for p in params), c, xi)
        self.penalty.hook_into(params)

    def _theta(self) -> Tensor:
        return flat_params(self.trainable(0))

    def start_task(self, task: int) -> None:
        self.penalty.start_task(self._theta().detach())

    def loss(
        self, x: Tensor, y: Tensor, task: int | Tensor, generator: torch.Generator, weight: float = 1.0
    ) -> tuple[Tensor, Logged]:
        theta = self._theta()
        self.penalty.track(theta.detach())  # the previous step's -g * dtheta
        task_loss = self.data_loss(x, y, task, weight)
        reg = self.penalty(theta)
        return task_loss + reg, {"task_loss": float(task_loss.detach()), "reg": float(reg.detach())}

    def reduced_gradients(self, params: list[Tensor], grads: list[Tensor]) -> None:
        # the path integral needs the gradient that was applied: on several processes, the mean
        # over them (the hooks saw this process's part only); kept before the checkpoint is written
        self.penalty.keep(params, grads)

    def end_task(self, task: int, x: Tensor, generator: torch.Generator) -> None:
        theta = self._theta().detach()
        self.penalty.track(theta)  # the task's last step
        self.penalty.consolidate(theta)

    def memory_bytes(self) -> int:
        return 2 * self.penalty.omega.numel() * self.penalty.omega.element_size()  # omega and anchor


class PerTaskNets(Learner):
    """One network per task (no sharing, no forgetting); `joint`: all trained together."""

    def __init__(self, nets: Sequence[nn.Module], joint: bool = False) -> None:
        super().__init__()
        self.nets, self.joint = nn.ModuleList(nets), joint

    def forward(self, x: Tensor, task: int | Tensor) -> Tensor:
        if isinstance(task, Tensor) and task.ndim == 1:
            outs = [net(x) for net in self.nets]  # small nets: every net on the batch, then pick
            stacked = torch.stack(outs)  # [T, B, C]
            return stacked[task, torch.arange(x.shape[0], device=x.device)]
        out: Tensor = self.nets[int(task)](x)
        return out

    def trainable(self, task: int) -> list[nn.Parameter]:
        nets = self.nets if self.joint else [self.nets[task]]
        return [p for net in nets for p in net.parameters() if p.requires_grad]


class HnetLearner(Learner):
    """The hypernetwork method: task loss + the output regularizer (`subset` earlier tasks per
    step, 0 for all; `lookahead_lr > 0` adds the look-ahead `ΔΘ`)."""

    def __init__(self, hnet: HnetContinual, subset: int = 0, lookahead_lr: float = 0.0) -> None:
        super().__init__()
        self.hnet, self.subset, self.lookahead_lr = hnet, subset, lookahead_lr

    def forward(self, x: Tensor, task: int | Tensor) -> Tensor:
        if isinstance(task, Tensor):
            if task.ndim and bool((task != task.flatten()[0]).any()):
                raise ValueError("HnetLearner: one task per batch (the generated network is shared by the batch)")
            task = int(task.flatten()[0])
        out: Tensor = self.hnet(x, task)
        return out

    def trainable(self, task: int) -> list[nn.Parameter]:
        return self.hnet.trainable(task)

    def loss(
        self, x: Tensor, y: Tensor, task: int | Tensor, generator: torch.Generator, weight: float = 1.0
    ) -> tuple[Tensor, Logged]:
        task_loss = self.data_loss(x, y, task, weight)
        delta = None
        if self.lookahead_lr:
            # the look-ahead is the whole batch's step: the mean over the processes of their parts'
            delta = lookahead_step(task_loss, self.hnet.hypernetwork, self.lookahead_lr)
            delta = {name: distributed.mean_across(step) for name, step in delta.items()}
        # the same on every process (same weights, targets and subset draw): not averaged away, not doubled
        reg = self.hnet.regularizer(int(task), subset=self.subset, generator=generator, delta=delta)
        return task_loss + reg, {"task_loss": float(task_loss.detach()), "reg": float(reg.detach())}

    def end_task(self, task: int, x: Tensor, generator: torch.Generator) -> None:
        self.hnet.end_task(task)

    def memory_bytes(self) -> int:
        return self.hnet.target_memory_bytes()


class Objective(distributed.ObjectiveModule):
    """`learner.loss` as a module's forward, so that DDP wraps the whole objective (data term and
    penalty); its state is the learner's (`distributed.ObjectiveModule`)."""

    def __init__(self, learner: Learner) -> None:
        super().__init__(learner, learner.loss)


def distribute(learner: Learner, find_unused: bool = True) -> nn.Module:
    """The module to train `learner` through: `Objective(learner)`, wrapped in DDP on several processes.

    Each process computes the loss of its part of the batch; DDP averages the gradients once, in
    the backward of the summed objective. A penalty (EWC, SI, the hypernetwork's regularizer) is
    computed identically on every process (same weights, same state, same draws), so the mean of
    its gradients is its gradient: counted once, as in one process. `find_unused`: DDP looks for
    parameters a step does not reach (other tasks' embeddings or networks), which it must when
    there are any; buffers are not broadcast at each step (every process updates them
    identically, by construction).
    The averaged gradients also go to `learner.reduced_gradients` (a DDP communication hook that
    all-reduces as DDP's own does, then hands them over)."""
    objective = Objective(learner)
    if not distributed.is_distributed():
        return objective
    options = inspect.signature(DistributedDataParallel).parameters
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in options else {"broadcast_buffers": False}
    ddp = distributed.wrap(objective, find_unused_parameters=find_unused, **no_sync)

    def hook(state: object, bucket: dist.GradBucket) -> torch.futures.Future[Tensor]:
        grads = bucket.buffer()
        grads.div_(distributed.world_size())  # as DDP's default: the mean over the processes
        fut = dist.all_reduce(grads, async_op=True).get_future()  # type: ignore[union-attr]

        def done(f: torch.futures.Future[list[Tensor]]) -> Tensor:
            learner.reduced_gradients(bucket.parameters(), bucket.gradients())
            return f.value()[0]

        return fut.then(done)

    # DDP checks the hook's annotations as objects; this module's are strings (postponed evaluation)
    hook.__annotations__.update({"state": object, "bucket": dist.GradBucket, "return": torch.futures.Future[Tensor]})
    ddp.register_comm_hook(None, hook)  # type: ignore[operator]
    return ddp
