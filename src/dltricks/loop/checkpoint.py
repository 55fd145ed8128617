"""Checkpoints without pickles: tensors in safetensors, everything else in JSON.

A checkpoint directory holds ``model.safetensors`` (the weights), ``best.safetensors`` (the best
epoch's weights, with early stopping), ``state.safetensors`` (optimiser tensors, RNG states, the
epoch's data order) and ``state.json`` (optimiser groups, scheduler, loop counters and curves).
It is written to a temporary directory and swapped in, so a kill mid-write leaves the last one whole.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from dltricks.errors import DltricksError

FORMAT = 1


@dataclass
class LoopState:
    """Where the loop stands: enough to continue bit-for-bit."""

    epoch: int = 0                      # epochs fully done
    step: int = 0                       # steps done within the current epoch
    global_step: int = 0
    curves: dict[str, list[float]] = field(default_factory=dict)
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    # partial sums of the running epoch's training metrics
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0                       # samples
    counted: int = 0                    # labels (pixels, for segmentation) behind ``correct``
    elapsed: float = 0.0
    first_loss: float | None = None     # the first step's loss: divergence is measured against it
    method: dict[str, Any] = field(default_factory=dict)  # the method's JSON scalars (its tensors: tensors)
    average: dict[str, Any] = field(default_factory=dict)  # the weight average's JSON scalars (SWALR's state)
    lr_found: float | None = None       # train.lr = "find": the range test's choice, kept so resume reuses it
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # perm, rng states

    def end_epoch(self, row: dict[str, float]) -> None:
        """Append the finished epoch's ``row`` to the curves and start the next epoch's sums."""
        for k, v in row.items():
            self.curves.setdefault(k, []).append(float(v))
        self.epoch, self.step, self.loss_sum, self.correct, self.seen, self.counted = self.epoch + 1, 0, 0.0, 0, 0, 0


def _split_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{idx}.{k}"] = v
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, idx, k = key.split(".", 2)
            state.setdefault(int(idx), {})[k] = v
    for key, v in meta["scalars"].items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def _contiguous(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in d.items()}


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, loop: LoopState, best: dict[str, torch.Tensor] | None = None,
                    fingerprint: str = "") -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(_contiguous(model.state_dict()), tmp / "model.safetensors")
    if best is not None:
        save_file(_contiguous(best), tmp / "best.safetensors")
    opt_tensors, opt_meta = _split_optimizer(optimizer.state_dict())
    loop_tensors = {f"loop.{k}": v for k, v in loop.tensors.items()}
    save_file(_contiguous({**opt_tensors, **loop_tensors}), tmp / "state.safetensors")
    meta = {k: v for k, v in loop.__dict__.items() if k != "tensors"}
    doc = {"format": FORMAT, "fingerprint": fingerprint, "loop": meta, "optimizer": opt_meta,
           "scheduler": scheduler.state_dict() if scheduler is not None else None}
    (tmp / "state.json").write_text(json.dumps(doc))
    old = path.with_name(path.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def find_checkpoint(path: str | Path) -> Path | None:
    """The checkpoint at ``path``, or the previous one if a swap was cut short."""
    path = Path(path)
    for p in (path, path.with_name(path.name + ".old")):
        if (p / "state.json").is_file():
            return p
    return None


def peek_loop(path: str | Path) -> dict[str, Any]:
    """The loop counters of the checkpoint at ``path`` (``{}`` if there is none or it cannot be read): what a
    resumed run must know before it builds its optimiser (``lr_found``)."""
    found = find_checkpoint(path)
    try:
        return json.loads((found / "state.json").read_text())["loop"] if found else {}
    except (OSError, ValueError, KeyError):
        return {}


def load_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    fingerprint: str = "") -> tuple[LoopState, dict[str, torch.Tensor] | None]:
    """Restore model, optimiser and scheduler in place; return the loop state and best weights."""
    found = find_checkpoint(path)
    if found is None:
        raise DltricksError(f"no checkpoint at {path}; a run can resume once it has saved one (after its "
                            "first interruption or epoch)")
    try:
        doc = json.loads((found / "state.json").read_text())
        if doc.get("format") != FORMAT:
            raise ValueError(f"format {doc.get('format')} (this dltricks reads {FORMAT})")
        if fingerprint and doc.get("fingerprint") != fingerprint:
            raise DltricksError(f"checkpoint {found} was written for a different recipe or model; "
                                "resume with the recipe it was started with")
        model.load_state_dict(load_file(found / "model.safetensors"))
        tensors = load_file(found / "state.safetensors")
        optimizer.load_state_dict(_join_optimizer(tensors, doc["optimizer"]))
        if scheduler is not None and doc["scheduler"] is not None:
            scheduler.load_state_dict(doc["scheduler"])
        best = load_file(found / "best.safetensors") if (found / "best.safetensors").exists() else None
    except DltricksError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:
        raise DltricksError(f"checkpoint {found} is corrupt or incomplete ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200]})") from None
    loop = LoopState(**doc["loop"])
    loop.tensors = {k[5:]: v for k, v in tensors.items() if k.startswith("loop.")}
    return loop, best


def save_weights(path: str | Path, model: nn.Module) -> Path:
    """Just the weights, as safetensors: what to ship or load elsewhere."""
    save_file(_contiguous(model.state_dict()), str(path))
    return Path(path)


def load_weights(path: str | Path, model: nn.Module, strict: bool = True) -> nn.Module:
    try:
        sd = load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise DltricksError(f"cannot read weights {path}: {e}") from None
    model.load_state_dict(sd, strict=strict)
    return model
