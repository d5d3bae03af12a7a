"""Multi-process training on PyTorch's own engine: `torch.distributed` + DDP, launched by `torchrun`
(or by `launch`, which runs torchrun's launcher in-process for `hypernet run NAME --nproc N`).

A process learns its place from the environment torchrun sets (`RANK`, `WORLD_SIZE`,
`LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`). Every rank draws the same global batch from the same
seeded generator and keeps its own strided part (`shard`), DDP averages the gradients, so N
processes take the same steps as one process with the whole batch (up to float summation order).
Rank 0 alone writes files; a failed rank ends the whole run (torchrun's agent stops the others).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

if TYPE_CHECKING:
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure


class DistributedRunError(RuntimeError):
    """A process of a multi-process run failed (`exitcode`: its exit code); the others were stopped."""

    def __init__(self, message: str, exitcode: int = 1) -> None:
        super().__init__(message)
        self.exitcode = exitcode


def env_world_size() -> int:
    """`WORLD_SIZE` as torchrun sets it (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Whether this process writes files (rank 0, or the only process)."""
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join the process group described by torchrun's environment: gloo on CPU, nccl on CUDA (one
    GPU per process, `cuda:LOCAL_RANK`). Returns the device this process computes on."""
    if dist.is_initialized():
        raise RuntimeError("init: the process group is already initialised")
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK={local}: only {torch.cuda.device_count()} CUDA device(s) here")
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", init_method="env://")
        return torch.device("cuda", local)
    dist.init_process_group("gloo", init_method="env://")
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(*tensors: Tensor) -> tuple[Tensor, ...]:
    """This rank's part of a global batch: rows `rank, rank + W, rank + 2W, ...` of each tensor.

    Strided rather than contiguous so that a batch laid out by task (all of task 0, then task 1,
    ...) gives every rank every task. The global batch must split evenly: DDP averages the ranks'
    gradients with equal weight, which equals the whole batch's mean only for equal parts.
    """
    if world_size() == 1:
        return tensors
    return tuple(part(t, rank(), world_size()) for t in tensors)


def part(t: Tensor, index: int, count: int) -> Tensor:
    """Rows `index, index + count, ...` of `t: [B, ...]`; `B` must be a multiple of `count`."""
    if t.shape[0] % count:
        raise ValueError(
            f"shard: a global batch of {t.shape[0]} samples does not split evenly over {count} processes; "
            f"choose a batch size that is a multiple of {count}"
        )
    return t[index::count]


def wrap(model: nn.Module, **options: Any) -> nn.Module:
    """`DistributedDataParallel(model, **options)` in a multi-process run (the model already on its
    device), else `model` itself. Call the returned module in the step function, so DDP averages
    gradients."""
    if not is_distributed():
        return model
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, **options)


class ObjectiveModule(nn.Module):
    """A loss `fn(*args, **kwargs)` over `owner`'s parameters as a module's forward, so that DDP
    wraps the whole objective (data term and any penalty or entropy): every parameter the loss
    reaches is found, and its gradient averaged once.

    Its state is `owner`'s (`state_dict` without a prefix), so the checkpoints of one-process and
    several-process runs are the same files as those of `owner` trained on its own."""

    def __init__(self, owner: nn.Module, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.owner = owner
        self.fn = fn

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return self.owner.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        return self.owner.load_state_dict(state_dict, strict=strict, assign=assign)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (its state_dict has no `module.` prefix, so checkpoints of
    1-process and N-process runs are interchangeable)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def is_wrapped(model: nn.Module) -> bool:
    return isinstance(model, DistributedDataParallel)


def mean_across(values: Tensor) -> Tensor:
    """The mean of `values` over the ranks (a copy; itself with one process)."""
    if not is_distributed():
        return values
    out = values.detach().clone()
    if dist.get_backend() == "nccl":  # nccl reduces CUDA tensors only
        out = out.to(torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(out, op=dist.ReduceOp.SUM)  # gloo has no AVG
    return (out / world_size()).to(values.device)


def broadcast(obj: Any, src: int = 0) -> Any:
    """`obj` of rank `src` on every rank (any picklable value of our own making)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def is_peer_failure(exc: BaseException) -> bool:
    """Whether `exc` is this process noticing that another process of the run died (its own
    message says why; this one need not add a second)."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("Connection closed by peer" in text or "Connection reset" in text)


LAUNCHED_ENV = "HYPERNET_LAUNCHED"  # set by `launch` for its processes


def launched() -> bool:
    """Whether this process was started by `launch` (`--nproc`), whose launcher reports how the
    run ended, rather than by a user's torchrun."""
    return os.environ.get(LAUNCHED_ENV) == "1"


def record_failure(exc: BaseException) -> None:
    """Leave `exc` where torchrun's agent looks for a worker's failure (`TORCHELASTIC_ERROR_FILE`),
    so that the launcher names the process that failed first, not the ones that saw it die."""
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

        ErrorHandler().record_exception(exc)


def stop_on_sigterm() -> Any:
    """Turn SIGTERM (how torchrun's agent stops the other processes when one fails, and how
    schedulers stop a job) into `SystemExit(143)`, so that `finally` blocks run: an atomic write
    in progress removes its temporary file, and no file is left half-written. Returns the previous
    handler (None where signals cannot be set: off the main thread)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, stop)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def first_failure(failures: Mapping[int, ProcessFailure]) -> tuple[int, ProcessFailure, str]:
    """The process that failed on its own, from torchrun's per-rank failures: `(rank, failure, why)`.

    A process that recorded its exception (`record_failure`) failed first; the others died of
    seeing it go (gloo aborts them with SIGABRT, or the agent stops them). torch gives a process
    with no error file a placeholder `{"message": "<NONE>"}` (truthy) and the time it was noticed
    (whole seconds), so a recorded one is told apart by its message, and ties go to the lower rank.
    """

    def recorded(f: ProcessFailure) -> bool:
        return isinstance(f.error_file_data, dict) and f.error_file_data.get("message", "<NONE>") != "<NONE>"

    def stopped_by_agent(f: ProcessFailure) -> bool:  # SIGTERM, or the SystemExit it becomes here
        return f.exitcode in (-signal.SIGTERM, 128 + signal.SIGTERM)

    own = {r: f for r, f in failures.items() if recorded(f)}
    # nobody recorded an error (a process killed from outside): one the agent did not stop is it
    pool = own or {r: f for r, f in failures.items() if not stopped_by_agent(f)} or dict(failures)
    rank, failure = min(pool.items(), key=lambda kv: (kv[1].timestamp, kv[0]))
    message = failure.message.get("message", "") if isinstance(failure.message, dict) else failure.message
    text = str(message).strip()
    if own and text:
        why = text.splitlines()[0]
    elif failure.exitcode < 0:
        why = f"killed by {_signal_name(-failure.exitcode)}"
    else:
        why = f"exit code {failure.exitcode}"
    return rank, failure, why


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def launch(args: list[str], nproc: int, env: dict[str, str] | None = None) -> None:
    """Run `python ARGS` as `nproc` processes on this machine with torchrun's launcher (standalone
    rendezvous on a free local port, no restarts). Raises `DistributedRunError` naming the first
    failed rank and its exit code; torchrun's agent has then stopped the other processes."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise ValueError(f"nproc: expected >= 1, got {nproc}")
    # torchrun's own logging is for operators of elastic jobs (the failure it logs, we raise);
    # its loggers carry their own levels, so each is quietened
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed.elastic") or name.startswith("torch.distributed.launcher"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # what `torchrun --standalone` uses: a free port
        max_restarts=0,
        monitor_interval=0.1,
    )
    saved = dict(os.environ)
    os.environ.update(env or {})
    # torchrun sets OMP_NUM_THREADS=1 for N > 1 (with a warning) unless given; say it ourselves
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    os.environ[LAUNCHED_ENV] = "1"  # the processes know this launcher reports an interrupt
    try:
        elastic_launch(config, sys.executable)(*args)
    except SignalException as exc:
        # this process was stopped (Ctrl-C, or SIGTERM from a scheduler): the agent has stopped the
        # others; report it as the one-process run would, not as a failure
        if exc.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        raise SystemExit(128 + int(exc.sigval)) from None
    except ChildFailedError as exc:
        failed_rank, failure, why = first_failure(exc.failures)
        raise DistributedRunError(
            f"process {failed_rank} of {nproc} failed ({why}); the others were stopped", failure.exitcode
        ) from None
    finally:
        os.environ.clear()
        os.environ.update(saved)
