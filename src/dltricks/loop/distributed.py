"""One run on many processes: PyTorch's process group as torchrun sets it up, for :func:`~dltricks.loop.fit`.

    torchrun --nproc-per-node 2 -m dltricks.cli train mnist1d-mlp     # or: dltricks train mnist1d-mlp --nproc 2

Each process (a *rank*) reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from torchrun's environment and
joins the group: ``gloo`` on CPU, ``nccl`` on CUDA (one device per rank, ``cuda:LOCAL_RANK``).
What the loop does with it:

- ``train.batch_size`` stays the global batch: every rank draws the same seeded order and takes its own
  contiguous share of each batch (:func:`shard`), so a recipe means the same at any world size;
- each rank's loss is weighted by its share (``n_rank * world / n_batch``) and the gradients are averaged
  in one flat all-reduce per optimiser step (:func:`average_grads`), the arithmetic of
  DistributedDataParallel: the step equals one process's step on the whole batch, to float tolerance,
  even when the batch does not divide evenly. It is done on the gradients rather than by wrapping the
  model, so a method's own modules (a projector, a discriminator) and a model's attributes work unchanged,
  and accumulation (``train.grad_accum_steps``) reduces once per step, as DDP's ``no_sync`` would;
- the step's loss and a stop request travel together in one small all-reduce (:func:`reduce_step`), so every
  rank sees the same loss (one NaN check, one divergence check) and Ctrl-C stops every rank at the same step;
- rank 0 alone writes the ledger, checkpoints, curves and figures; the others follow.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dltricks.errors import DltricksError, RunFailed

__all__ = ["Dist", "launched", "setup", "current", "teardown", "check_backend", "shard", "average_grads",
           "reduce_step", "reduce_counts", "broadcast_state", "broadcast", "barrier", "gather_rng", "describe",
           "check_world", "rank_device", "sync_batchnorm", "announce",
           "peers_watched", "PeerLost",
           "devices_available"]


@dataclass(frozen=True)
class Dist:
    """This process's place in the group: ``rank`` of ``world`` processes, ``local_rank`` on its machine."""

    rank: int
    world: int
    local_rank: int
    backend: str

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes."""
        return self.rank == 0


def launched() -> bool:
    """True in a process that torchrun (or ``dltricks train --nproc N``) started as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def check_backend(backend: str) -> str:
    """``backend`` if this machine can run it, else one line saying what can."""
    import torch.distributed as dist

    if backend not in ("gloo", "nccl"):
        raise DltricksError(f"unknown process-group backend {backend!r}; use gloo (CPU) or nccl (CUDA)")
    if backend == "nccl" and not torch.cuda.is_available():
        raise DltricksError("backend nccl needs CUDA, and this machine has no CUDA device; use gloo (the "
                            "default on CPU)")
    if backend == "nccl" and not dist.is_nccl_available():
        raise DltricksError("backend nccl is not built into this torch; use gloo")
    return backend


def devices_available(device: str = "auto") -> tuple[int, str]:
    """How many ranks this machine can give one device each, and what they are: CUDA devices where the run
    uses CUDA, else CPU cores (gloo ranks beyond the cores would only take turns on them)."""
    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.device_count(), "CUDA device(s)"
    return os.cpu_count() or 1, "CPU core(s)"


def setup(device: str = "auto") -> Dist | None:
    """Join torchrun's process group (once) and return this rank's :class:`Dist`; None when not launched as
    one of several ranks. The backend: ``DLTRICKS_BACKEND`` if set, else nccl where the run uses CUDA."""
    import torch.distributed as dist

    if not launched():
        return None
    if dist.is_initialized():
        return current()
    cuda = device != "cpu" and torch.cuda.is_available()
    backend = check_backend(os.environ.get("DLTRICKS_BACKEND") or ("nccl" if cuda else "gloo"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local)  # one device per rank, before the group binds to one
    dist.init_process_group(backend)
    return current()


def current() -> Dist | None:
    """This rank's :class:`Dist` while a process group of more than one rank is up, else None."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_backend())


def teardown(finished: bool = False) -> None:
    """Leave the process group (torch warns at exit when a group is left open). ``finished``: every rank
    ended its run, so they meet once more first: a rank that tore gloo down while rank 0 was still writing
    the ledger could abort at exit ("terminate called without an active exception") and fail the launch."""
    import datetime

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if finished and dist.get_world_size() > 1:
        try:
            if dist.get_backend() == "gloo":  # a rank that never comes is named, not waited on for 30 minutes
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=120))
            else:
                dist.barrier()
        except RuntimeError:  # a peer that went away: nothing left to meet, leave as before
            pass
    dist.destroy_process_group()


def describe(device: torch.device, d: Dist | None) -> str:
    """The device as the ledger records it: ``cpu``, ``cuda:3`` (the physical device a worker of
    ``ablate --gpus`` was given), or ``cpu x2 (gloo)`` for a run on two ranks."""
    if d is not None:
        return f"{device.type} x{d.world} ({d.backend})"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if device.type == "cuda" and visible and "," not in visible:
        return f"cuda:{visible}"
    return str(device)


def rank_device(device: torch.device, d: Dist | None) -> torch.device:
    """CUDA ranks each take their own device (``cuda:LOCAL_RANK``); anything else stays."""
    if d is not None and device.type == "cuda":
        return torch.device("cuda", d.local_rank)
    return device


def check_world(checkpoint: Path, d: Dist | None) -> None:
    """Refuse, in one line, to resume a checkpoint at another world size than it was trained at (the data's
    shares, the ranks' RNG states and the counts it holds belong to that many ranks)."""
    from safetensors import safe_open

    from dltricks.loop.checkpoint import find_checkpoint

    found = find_checkpoint(checkpoint)
    if found is None or not (found / "state.safetensors").is_file():
        return
    with safe_open(str(found / "state.safetensors"), "pt") as f:
        was = int(f.get_tensor("loop.world_size")) if "loop.world_size" in f.keys() else 1  # noqa: SIM118
    world = d.world if d is not None else 1
    if was != world:
        how = f"--nproc {was}" if was > 1 else "without --nproc"
        raise DltricksError(f"this run was trained on {was} process(es) and cannot resume on {world}: "
                            f"resume it {how}")


class PeerLost(RunFailed):
    """Another rank went away; the rank that raises this had nothing wrong of its own."""


@contextmanager
def peers_watched() -> Iterator[None]:
    """On several ranks: a collective that failed because another rank went away (killed, out of memory,
    crashed) becomes :class:`PeerLost` (a :class:`~dltricks.errors.RunFailed`) saying so, with the backend's
    own words after it."""
    try:
        yield
    except RuntimeError as e:
        d = current()
        text = str(e)
        lost = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "NCCL communicator was aborted")
        if d is None or not any(w in text for w in lost):
            raise
        first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
        raise PeerLost(f"another of the {d.world} ranks died or stopped (its connection was lost: "
                        f"{first[:160]})") from None


def announce(run_id: str, d: Dist | None) -> None:
    """Rank 0 tells the agent of ``dltricks train --nproc`` which run it records (``DLTRICKS_RUN_FILE``), so
    that a rank that dies, and takes rank 0 down with it, still leaves the run marked failed with the reason."""
    path = os.environ.get("DLTRICKS_RUN_FILE")
    if d is not None and d.main and path:
        Path(path).write_text(run_id)


def shard(sel: torch.Tensor, d: Dist | None) -> torch.Tensor:
    """This rank's contiguous share of a global batch's sample positions ``sel`` (shares differ by at most one)."""
    if d is None:
        return sel
    return torch.tensor_split(sel, d.world)[d.rank]


def average_grads(params: list[nn.Parameter], d: Dist) -> None:
    """Average the gradients of ``params`` over the ranks in one flat all-reduce (a missing gradient counts
    as zero, on every rank alike)."""
    import torch.distributed as dist

    params = [p for p in params if p.requires_grad]
    if not params:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= d.world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone() if p.grad is None else p.grad.copy_(
            flat[offset:offset + n].view_as(p))
        offset += n


def reduce_step(loss_sum: float, n: int, stop: bool, d: Dist, device: torch.device) -> tuple[float, int, bool]:
    """(the step's loss over the whole batch, its samples, whether any rank asked to stop), from this rank's
    ``loss_sum`` over its ``n`` samples and its stop flag: one small all-reduce."""
    import torch.distributed as dist

    t = torch.tensor([loss_sum, float(n), float(stop)], dtype=torch.float64, device=_comm(device, d))
    dist.all_reduce(t)
    total, count, stops = t.tolist()
    return total / max(count, 1.0), int(round(count)), stops > 0


def reduce_counts(values: list[int], d: Dist, device: torch.device) -> list[int]:
    """Integer counts (correct predictions, labels) summed over the ranks."""
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=_comm(device, d))
    dist.all_reduce(t)
    return [int(round(v)) for v in t.tolist()]


def broadcast_state(module: nn.Module, d: Dist, buffers_only: bool = False) -> None:
    """Rank 0's parameters and buffers on every rank (the same start, and batch-norm statistics that every
    rank evaluates and rank 0 saves)."""
    import torch.distributed as dist

    with torch.no_grad():
        for t in [*([] if buffers_only else module.parameters()), *module.buffers()]:
            dist.broadcast(t.data, 0)


def broadcast(obj: Any, d: Dist | None) -> Any:
    """Rank 0's ``obj`` (anything picklable in memory: a run id, a flag) on every rank."""
    if d is None:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, 0)
    return box[0]


def barrier(d: Dist | None) -> None:
    if d is not None:
        import torch.distributed as dist

        dist.barrier()


def gather_rng(d: Dist) -> list[torch.Tensor]:
    """Every rank's torch RNG state, on every rank (rank 0 checkpoints them all: dropout draws differ per rank)."""
    import torch.distributed as dist

    states: list[Any] = [None] * d.world
    dist.all_gather_object(states, torch.get_rng_state())
    return states


def _comm(device: torch.device, d: Dist) -> torch.device:
    return device if d.backend == "nccl" else torch.device("cpu")


class _GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are over the whole batch of all ranks, for CPU ranks (gloo):
    torch's :class:`~torch.nn.SyncBatchNorm` runs on accelerators only. The per-channel sums, sums of squares
    and counts travel in one all-reduce that autograd differentiates through
    (:func:`torch.distributed.nn.functional.all_reduce`), so the gradient is that of the global statistics."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist
        from torch.distributed.nn.functional import all_reduce

        if not self.training or not dist.is_initialized():
            return super().forward(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        count = torch.full((1,), float(x.numel() // c), dtype=xf.dtype)
        with warnings.catch_warnings():  # "deprecated" for a private successor; it is what autograd needs here
            warnings.simplefilter("ignore", FutureWarning)
            total = all_reduce(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))
        n = total[-1]
        mean = total[:c] / n
        var = total[c:2 * c] / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / max(float(n) - 1, 1.0), alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with every batch norm computing its statistics over all ranks: torch's SyncBatchNorm on
    CUDA, :class:`_GlooSyncBatchNorm` on CPU; the same parameters and buffers (state-dict keys unchanged)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, _GlooSyncBatchNorm):
        new = _GlooSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                 module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, sync_batchnorm(child, device))
    return module
