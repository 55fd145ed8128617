"""The plain supervised set-up: every run's ``test_*`` metrics (and ``val_*`` with a validation split),
from the task's own meter on the final (or best) weights."""

from __future__ import annotations

from torch import nn

from dltricks.loop.tasks import Task
from dltricks.loop.training import evaluate
from dltricks.methods.registry import Setup, Trained, register_method

__all__ = ["Supervised"]


@register_method("supervised")
class Supervised(Setup):
    order = 0
    on_test_split = True

    @classmethod
    def selects(cls, recipe, bundle) -> bool:
        return True

    def metric_names(self, model: nn.Module, task: Task) -> list[str]:
        # the freshly built model scored on a few test samples by the same evaluate: exactly a run's names
        x, y = self.bundle.test
        names = [f"test_{k}" for k in evaluate(model, (x[:4], y[:4]), task, batch_size=4, device="cpu")]
        if self.bundle.val is not None:
            names += [f"val_{k.removeprefix('test_')}" for k in names]
        return names

    def metrics(self, run: Trained) -> dict[str, float]:
        kw = run.eval_kw()
        out = {f"test_{k}": v for k, v in evaluate(run.model, self.bundle.test, run.task, **kw).items()}
        if self.bundle.val is not None:
            out.update({f"val_{k}": v for k, v in evaluate(run.model, self.bundle.val, run.task, **kw).items()})
        return out
