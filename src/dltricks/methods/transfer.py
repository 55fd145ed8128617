"""Transfer learning: start from an earlier run's weights, freeze layers, layer-wise learning rates and
gradual unfreezing (Howard & Ruder 2018, ULMFiT).

``model.init_from = RUN_ID`` (or a ``.safetensors`` path) loads every tensor whose name and shape match;
the head stays freshly initialised when the number of classes differs, and any other mismatch is an
error. Layer *groups* are the model's weight layers in order (each Linear/conv with the norms and other
parameters that follow it), so the head is group 0 counted from the top.

- ``train.freeze``: module-name prefixes (``"0.0"``, ``"0"``) or ``"backbone"`` (all but the head) never train;
- ``train.layer_lr_decay = d``: group ``i`` from the top trains at ``lr * d**i`` (discriminative rates);
- ``train.unfreeze_every = k``: only the head trains at first, one more group every ``k`` epochs.

Frozen norm layers stay in eval mode, so their running statistics keep what pretraining learnt.
"""

from __future__ import annotations

from typing import Any

import torch
from rich.console import Console
from torch import nn

from dltricks.errors import DltricksError
from dltricks.loop.from_run import run_weights
from dltricks.loop.method import Method, Wrapped
from dltricks.loop.optim import _NORMS
from dltricks.methods.registry import Setup, register_method
from dltricks.recipe import TrainSpec

__all__ = ["Transfer", "init_from", "load_matching", "layer_groups", "head_name", "FineTune"]

_WEIGHT_LAYERS = (nn.Linear, nn.modules.conv._ConvNd, nn.MultiheadAttention, nn.RNNBase, nn.Embedding)


def layer_groups(model: nn.Module) -> list[list[str]]:
    """Module names grouped into layers, bottom up: a new group starts at every weight layer, and the
    modules with parameters after it (norms, scales) join its group."""
    groups: list[list[str]] = []
    for name, m in model.named_modules():
        if not any(True for _ in m.parameters(recurse=False)):
            continue
        if isinstance(m, _WEIGHT_LAYERS) or not groups:
            groups.append([name])
        else:
            groups[-1].append(name)
    return groups


def head_name(model: nn.Module) -> str:
    """The model's output layer: its last weight layer."""
    groups = layer_groups(model)
    if not groups:
        raise DltricksError("the model has no parameters to fine-tune")
    return groups[-1][0]


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> tuple[list[str], list[str]]:
    """Copy the tensors of ``state`` that match ``model`` by name and shape; the head may differ in shape
    (other classes: it stays as initialised), anything else that differs is an error. Returns the
    names loaded and the model's names left as initialised."""
    own = model.state_dict()
    head = head_name(model) + "."
    loaded, mismatched = [], []
    for k, v in own.items():
        if k not in state:
            continue
        if state[k].shape != v.shape:
            if not k.startswith(head):
                raise DltricksError(f"{source}: tensor {k} has shape {tuple(state[k].shape)} but the model's is "
                                    f"{tuple(v.shape)}; model.init_from needs the same architecture (only the "
                                    f"head may differ)")
            mismatched.append(k)
            continue
        loaded.append(k)
    if not loaded:
        raise DltricksError(f"{source}: no tensor matches the model by name (it has e.g. {next(iter(state), '-')}, "
                            f"the model {next(iter(own), '-')}); is it another architecture?")
    with torch.no_grad():
        for k in loaded:
            own[k].copy_(state[k])
    return loaded, [k for k in own if k not in loaded]


def init_from(model: nn.Module, ref: str, ledger: Any, bundle: Any = None, quiet: bool = False) -> list[str]:
    """Load ``ref`` (a run id or a ``.safetensors`` path) into ``model`` and say what was loaded."""
    from dltricks.ledger import Ledger

    ledger = ledger or Ledger()
    rec, state = run_weights(ledger, ref)
    source = f"model.init_from = {ref!r}" + (f" (run {rec.id})" if rec else "")
    loaded, fresh = load_matching(model, state, source)
    if not quiet:
        n = sum(model.state_dict()[k].numel() for k in loaded)
        rest = f"; re-initialised: {', '.join(sorted({k.rsplit('.', 1)[0] for k in fresh}))}" if fresh else ""
        Console(stderr=True, soft_wrap=True).print(
            f"[dim]{source}: loaded {len(loaded)} tensors ({n:,} values){rest}[/]")
    return loaded


class FineTune(Wrapped):
    """Wraps a step method with frozen layers, layer-wise rates and gradual unfreezing."""

    name = "fine_tune"

    def __init__(self, inner: Method, model: nn.Module, cfg: TrainSpec) -> None:
        super().__init__(inner)
        self.cfg = cfg
        self.groups = layer_groups(model)[::-1]  # top (head) first
        head = self.groups[0][0]
        prefixes = cfg.freeze
        unknown = [p for p in prefixes if p != "backbone" and not any(
            n == p or n.startswith(p + ".") for n, _ in model.named_modules())]
        if unknown:
            from dltricks.errors import did_you_mean

            names = [n for n, _ in model.named_modules() if n]
            raise DltricksError(f"train.freeze: no module {unknown[0]!r}{did_you_mean(unknown[0], names)}; use "
                                f"'backbone' or a module-name prefix such as {names[0]!r}")

        def frozen(name: str) -> bool:
            if "backbone" in prefixes and name != head and not name.startswith(head + "."):
                return True
            return any(name == p or name.startswith(p + ".") for p in prefixes)

        self.always_frozen = {n for g in self.groups for n in g if frozen(n)}
        self.modules_by_name = dict(model.named_modules())

    # ---- what trains (the rest of the step is the inner method's) -----------------------------------------
    def param_groups(self, model: nn.Module, cfg: TrainSpec) -> list[dict]:
        out = []
        for depth, group in enumerate(self.groups):
            decay, no_decay = [], []
            for name in group:
                if name in self.always_frozen:
                    continue
                m = self.modules_by_name[name]
                for pname, p in m.named_parameters(recurse=False):
                    spare = not cfg.decay_norm_and_bias and (isinstance(m, _NORMS) or pname.endswith("bias"))
                    (no_decay if spare or cfg.weight_decay == 0 else decay).append(p)
            lr = cfg.lr * cfg.layer_lr_decay ** depth
            out += [{"params": ps, "weight_decay": wd, "lr": lr}
                    for ps, wd in ((decay, cfg.weight_decay), (no_decay, 0.0)) if ps]
        for name in self.always_frozen:
            for p in self.modules_by_name[name].parameters(recurse=False):
                p.requires_grad_(False)
        extra = [p for m in self.inner.modules().values() for p in m.parameters() if p.requires_grad]
        if extra:
            out.append({"params": extra, "weight_decay": 0.0, "lr": cfg.lr})
        if not out:
            raise DltricksError("train.freeze leaves nothing to train")
        return out

    def trainable_groups(self, epoch: int) -> int:
        if not self.cfg.unfreeze_every:
            return len(self.groups)
        return 1 + epoch // self.cfg.unfreeze_every

    def start_epoch(self, model: nn.Module, epoch: int) -> None:
        self.inner.start_epoch(model, epoch)
        live = self.trainable_groups(epoch)
        for depth, group in enumerate(self.groups):
            for name in group:
                m = self.modules_by_name[name]
                on = depth < live and name not in self.always_frozen
                for p in m.parameters(recurse=False):
                    p.requires_grad_(on)
                if not on and isinstance(m, _NORMS):
                    m.eval()  # a frozen norm keeps its running statistics


@register_method("transfer")
class Transfer(Setup):
    """Fine-tuning: the model starts from a run's weights (``model.init_from``); frozen layers, layer-wise
    rates and gradual unfreezing (``train.freeze``, ``train.layer_lr_decay``, ``train.unfreeze_every``)
    wrap whichever step trains it."""

    @classmethod
    def selects(cls, recipe, bundle) -> bool:
        t = recipe.train
        return bool(recipe.model.init_from or t.freeze or t.layer_lr_decay < 1.0 or t.unfreeze_every)

    def prepare_model(self, model: nn.Module, ledger: Any, quiet: bool) -> None:
        if self.recipe.model.init_from:
            init_from(model, self.recipe.model.init_from, ledger, self.bundle, quiet=quiet)

    def wrap(self, step: Method, model: nn.Module) -> Method:
        t = self.recipe.train
        # a learner with its own outer loop (meta-learning) has no epochs of the loop to unfreeze over
        if (t.freeze or t.layer_lr_decay < 1.0 or t.unfreeze_every) and step.outer_loop() is None:
            return FineTune(step, model, t)
        return step
