"""Zero-shot recognition from class attributes: classes held out of training (``data.novel_classes``)
are recognised from their descriptions (``bundle.attributes``) alone.

- DAP-style attribute prediction (Lampert et al. 2009/2014): the model outputs one logit per attribute,
  trained with binary cross-entropy against its class's attribute vector (values in [0, 1]); a sample's
  score for a class is the log-likelihood of that class's attributes under the predicted probabilities.
- ESZSL (Romera-Paredes & Torr 2015): on a classifier's penultimate features X (N, d), L2-normalised, the
  closed form V = (X^T X + gamma I)^-1 X^T Y S (S^T S + lambda I)^-1 with Y (N, k) in {-1, 1} and S (k, A)
  the seen classes' attributes; a sample's score for a class with attributes s is x V s.

Metrics (Xian et al. 2018, per-class mean top-1): ``zsl_accuracy`` over the unseen classes only;
generalised zero-shot over seen and unseen classes together: ``gzsl_seen``, ``gzsl_unseen`` and their
harmonic mean ``gzsl_h``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from dltricks.errors import DltricksError
from dltricks.methods.episodes import features
from dltricks.methods.registry import Setup, Trained, register_method

__all__ = ["AttributeTask", "ZeroShot", "dap_scores", "eszsl_fit", "eszsl_scores", "per_class_accuracy",
           "zero_shot_metrics", "plot_zero_shot"]


def dap_scores(logits: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """(N, C) log-likelihood of each class's attributes ``s`` (C, A) under attribute logits (N, A)."""
    logp, log1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
    return logp @ s.T + log1mp @ (1 - s).T


def eszsl_fit(x: torch.Tensor, y: torch.Tensor, s: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """ESZSL's V (d, A) from features ``x`` (N, d), labels ``y`` (N,) in 0..k-1 and seen attributes ``s``
    (k, A). Features and class signatures are L2-normalised (as in the ESZSL code), so that classes with
    more attributes do not win by their norm."""
    x, s = F.normalize(x, dim=1).double(), F.normalize(s, dim=1).double()
    yy = -torch.ones(len(y), len(s), dtype=torch.float64)
    yy[torch.arange(len(y)), y] = 1.0
    left = torch.linalg.solve(x.T @ x + gamma * torch.eye(x.shape[1], dtype=torch.float64), x.T @ yy @ s)
    return torch.linalg.solve(s.T @ s + lam * torch.eye(s.shape[1], dtype=torch.float64), left.T).T.float()


def eszsl_scores(x: torch.Tensor, v: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """(N, C) compatibility of features ``x`` (N, d) with class signatures ``s`` (C, A)."""
    return F.normalize(x, dim=1) @ v @ F.normalize(s, dim=1).T


def per_class_accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over the classes present in ``y`` of the share of their samples predicted right."""
    accs = [(pred[y == c] == c).float().mean() for c in torch.unique(y)]
    return torch.stack(accs).mean().item()


@dataclass
class AttributeTask:
    """DAP training: the model outputs (N, A) attribute logits; ``seen`` (k, A) the seen classes' vectors.
    Its meter's ``accuracy`` is DAP's over the seen classes."""

    seen: torch.Tensor
    higher_is_better: dict[str, bool] = field(default_factory=lambda: {"loss": False, "accuracy": True})
    counts_accuracy = False  # outputs are attributes, not class scores

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), self.seen.to(logits.device)[y])

    def meter(self):
        return _DapMeter(self)

    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)


class _DapMeter:
    def __init__(self, task: AttributeTask) -> None:
        self.task, self.loss_sum, self.n, self.right = task, 0.0, 0, 0

    @torch.no_grad()
    def update(self, logits, y, loss) -> None:
        self.loss_sum += float(loss) * len(y)
        self.n += len(y)
        self.right += int((dap_scores(logits.float(), self.task.seen.to(logits.device)).argmax(1) == y).sum())

    def compute(self) -> dict[str, float]:
        return {"loss": self.loss_sum / self.n, "accuracy": self.right / self.n} if self.n else {}


def seen_unseen(bundle) -> tuple[torch.Tensor, torch.Tensor]:
    """The attribute matrices (k, A) of the seen (training) classes and (u, A) of the unseen ones."""
    if bundle.attributes is None:
        raise DltricksError("zero-shot learning needs class attributes: set data.attributes to a .json/.csv "
                            "file, or use data.name = 'zsl1d' (attributes by construction)")
    seen = torch.stack([bundle.attributes[n] for n in bundle.class_names])
    unseen = torch.stack([bundle.attributes[n] for n in bundle.novel_names]) if bundle.novel_names else None
    return seen, unseen


def zero_shot_metrics(model: nn.Module, bundle, method: str, gamma: float = 1.0, lam: float = 1.0,
                      device: torch.device | None = None) -> dict[str, float]:
    """ZSL accuracy on the unseen classes and GZSL seen / unseen / harmonic mean (per-class mean top-1)."""
    seen, unseen = seen_unseen(bundle)
    k = len(seen)
    both = torch.cat([seen, unseen])
    if method == "dap":
        def scores(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            return dap_scores(features(model, x, embedding=True, device=device), s)
    else:
        xtr = features(model, bundle.train[0], embedding=False, device=device)
        v = eszsl_fit(xtr, bundle.train[1], seen, gamma, lam)

        def scores(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            return eszsl_scores(features(model, x, embedding=False, device=device), v, s)
    xu, yu = bundle.novel
    xs, ys = bundle.test
    zsl = per_class_accuracy(scores(xu, unseen).argmax(1), yu)
    s_acc = per_class_accuracy(scores(xs, both).argmax(1), ys)
    u_acc = per_class_accuracy(scores(xu, both).argmax(1), yu + k)
    h = 2 * s_acc * u_acc / (s_acc + u_acc) if s_acc + u_acc > 0 else 0.0
    return {"zsl_accuracy": zsl, "gzsl_seen": s_acc, "gzsl_unseen": u_acc, "gzsl_h": h}


def plot_zero_shot(metrics: dict[str, float], path, title: str = "") -> None:
    """Bars of ZSL accuracy and GZSL seen / unseen / harmonic mean (the ``test_`` metrics of a run), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["zsl_accuracy", "gzsl_seen", "gzsl_unseen", "gzsl_h"]
    values = [metrics[f"test_{k}"] for k in keys]
    fig, ax = plt.subplots(figsize=(5, 3))
    bars = ax.bar(["ZSL\n(unseen only)", "GZSL\nseen", "GZSL\nunseen", "GZSL\nharmonic mean"], values,
                  color=["C0", "C1", "C2", "C3"])
    ax.bar_label(bars, fmt="%.2f")
    ax.set_ylim(0, 1)
    ax.set_ylabel("per-class mean accuracy")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


_ZS_NAMES = ("zsl_accuracy", "gzsl_seen", "gzsl_unseen", "gzsl_h")


@register_method("zero_shot")
class ZeroShot(Setup):
    """Held-out classes recognised from their attributes (``data.novel_classes`` with attributes;
    ``train.zero_shot`` picks DAP or ESZSL). DAP trains the head on the attributes."""

    @classmethod
    def selects(cls, recipe, bundle) -> bool:
        return recipe.train.zero_shot == "dap" or (bundle.novel is not None and bundle.attributes is not None)

    def _dap(self) -> bool:
        return self.recipe.train.zero_shot == "dap"

    def head_width(self) -> int | None:
        # DAP's head predicts the attributes, one logit each, instead of the classes
        if self._dap() and self.bundle.attributes is not None:
            return len(next(iter(self.bundle.attributes.values())))
        return None

    def task(self):
        if not self._dap():
            return None
        recipe, t = self.recipe, self.recipe.train
        seen, _ = seen_unseen(self.bundle)
        if recipe.model.embedding_dim or t.metric_loss != "none":
            raise DltricksError("train.zero_shot = 'dap' makes the head predict the attributes; it cannot also "
                                "be an embedding (set model.embedding_dim = 0 and train.metric_loss = 'none')")
        if seen.min() < 0 or seen.max() > 1:
            raise DltricksError("train.zero_shot = 'dap' predicts attributes as probabilities: they must lie in "
                                "[0, 1]; use train.zero_shot = 'eszsl' for real-valued attributes")
        return AttributeTask(seen)

    def _scored(self) -> bool:
        return self.bundle.novel is not None and self.bundle.attributes is not None

    def metric_names(self, model, task) -> list[str]:
        return [f"test_{k}" for k in _ZS_NAMES] if self._scored() else []

    def metrics(self, run: Trained) -> dict[str, float]:
        if not self._scored():
            return {}
        t = self.recipe.train
        zs = zero_shot_metrics(run.model, self.bundle, t.zero_shot, t.eszsl_gamma, t.eszsl_lambda, device=run.device)
        return {f"test_{k}": v for k, v in zs.items()}

    def figures(self, run: Trained, metrics: dict[str, float]) -> None:
        if run.run_dir is not None and "test_gzsl_h" in metrics:
            plot_zero_shot(metrics, run.run_dir / "zero_shot.png",
                           f"{self.recipe.name}: train.zero_shot = {self.recipe.train.zero_shot}")
