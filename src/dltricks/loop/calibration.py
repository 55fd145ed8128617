"""Calibration and uncertainty metrics of a predictive distribution (pure functions on tensors).

Classification, from predictive probabilities ``p`` (N, K) and labels ``y`` (N,):

- ``nll``: mean negative log-likelihood of the true class;
- ``brier``: mean squared distance between ``p`` and the one-hot label, summed over classes;
- ``ece`` (equal-width bins, Guo et al. 2017: the headline, comparable with the literature) and
  ``ece_adaptive`` (equal-mass bins, Nixon et al. 2019: every bin holds as many predictions, so a few
  confident bins do not hide the rest);
- ``reliability``: per-bin confidence, accuracy and count (the reliability diagram's bars);
- ``ood_auroc``: how well a score (predictive entropy) separates out-of-distribution inputs from test
  inputs, as the area under the ROC curve (0.5 = no better than chance).

Regression, from a Gaussian predictive ``mean``, ``var`` (N,) and targets ``y`` (N,): Gaussian NLL, the
share of targets inside the central 50/90/95% intervals (coverage, ideally the nominal level) and the
intervals' mean width.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch

from dltricks.loop.metrics import ece

__all__ = ["nll", "brier", "ece", "ece_adaptive", "reliability", "entropy", "ood_auroc", "classification_metrics",
           "gaussian_nll", "interval_metrics", "LEVELS"]

LEVELS = (0.5, 0.9, 0.95)
_EPS = 1e-12


def nll(p: torch.Tensor, y: torch.Tensor) -> float:
    """Mean -log p[y]; p (N, K) probabilities, y (N,) class ids."""
    return float(-p.gather(1, y.long()[:, None]).clamp_min(_EPS).log().mean())


def brier(p: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over samples of sum_k (p_k - [y = k])^2 (0 is perfect, 2 the worst)."""
    onehot = torch.nn.functional.one_hot(y.long(), p.shape[1]).to(p.dtype)
    return float((p - onehot).pow(2).sum(1).mean())


def ece_adaptive(confidence: torch.Tensor, correct: torch.Tensor, bins: int = 15) -> float:
    """ECE over equal-mass bins: predictions sorted by confidence and cut into ``bins`` groups of
    (nearly) equal size."""
    order = confidence.argsort()
    n = len(confidence)
    total = 0.0
    for part in torch.tensor_split(order, min(bins, n)):
        if len(part):
            total += len(part) / n * abs(confidence[part].mean().item() - correct[part].float().mean().item())
    return total


def reliability(confidence: torch.Tensor, correct: torch.Tensor, bins: int = 15) -> dict[str, list[float]]:
    """Equal-width bins: ``edges`` (bins + 1), and per bin ``confidence``, ``accuracy`` (NaN when
    empty) and ``count``."""
    edges = torch.linspace(0, 1, bins + 1)
    idx = torch.bucketize(confidence.clamp(_EPS, 1.0), edges[1:-1], right=False)
    conf, acc, count = [], [], []
    for b in range(bins):
        m = idx == b
        count.append(int(m.sum()))
        conf.append(confidence[m].mean().item() if m.any() else math.nan)
        acc.append(correct[m].float().mean().item() if m.any() else math.nan)
    return {"edges": edges.tolist(), "confidence": conf, "accuracy": acc, "count": count}


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Predictive entropy (N,) of probabilities (N, K), in nats."""
    return -(p * p.clamp_min(_EPS).log()).sum(1)


def ood_auroc(score_in: torch.Tensor, score_out: torch.Tensor) -> float:
    """AUROC of telling out-of-distribution inputs (positives) from in-distribution ones by ``score``
    (higher = more likely OOD)."""
    from sklearn.metrics import roc_auc_score

    s = torch.cat([score_in, score_out]).double().numpy()
    if float(s.max() - s.min()) == 0.0:  # equally unsure of everything: no information, chance level
        return 0.5
    return float(roc_auc_score([0] * len(score_in) + [1] * len(score_out), s))


def classification_metrics(p: torch.Tensor, y: torch.Tensor, bins: int = 15) -> dict[str, float]:
    """accuracy, nll, brier, ece, ece_adaptive of probabilities ``p`` (N, K) against ``y`` (N,)."""
    p = p.double().cpu()
    y = y.cpu()
    conf, pred = p.max(1)
    correct = pred == y
    return {"accuracy": correct.double().mean().item(), "nll": nll(p, y), "brier": brier(p, y),
            "ece": ece(conf, correct, bins), "ece_adaptive": ece_adaptive(conf, correct, bins)}


def gaussian_nll(mean: torch.Tensor, var: torch.Tensor, y: torch.Tensor) -> float:
    """Mean Gaussian negative log-likelihood of ``y`` under N(mean, var), all (N,)."""
    var = var.double().clamp_min(_EPS)
    return float((0.5 * (math.log(2 * math.pi) + var.log() + (y.double() - mean.double()).pow(2) / var)).mean())


def interval_metrics(mean: torch.Tensor, var: torch.Tensor, y: torch.Tensor,
                     levels: tuple[float, ...] = LEVELS) -> dict[str, float]:
    """``nll``, and for each central interval level L (percent): ``coverage_L`` (share of ``y`` inside)
    and ``width_L`` (mean interval width, in the target's units)."""
    mean, y = mean.double().cpu(), y.double().cpu()
    sd = var.double().cpu().clamp_min(_EPS).sqrt()
    out = {"nll": gaussian_nll(mean, sd.pow(2), y)}
    for level in levels:
        z = NormalDist().inv_cdf(0.5 + level / 2)  # the standard library's: scipy costs every run 0.2 s
        inside = (y - mean).abs() <= z * sd
        pct = round(level * 100)
        out[f"coverage_{pct}"] = inside.double().mean().item()
        out[f"width_{pct}"] = float((2 * z * sd).mean())
    return out
