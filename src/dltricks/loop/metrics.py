"""Classification metrics accumulated over batches: loss, accuracy and expected calibration error."""

from __future__ import annotations

import torch


def ece(confidence: torch.Tensor, correct: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017): the gap between confidence and accuracy, averaged
    over equal-width confidence bins and weighted by how many predictions fall in each."""
    edges = torch.linspace(0, 1, bins + 1)
    idx = torch.bucketize(confidence.clamp(1e-12, 1.0), edges[1:-1], right=False)
    n = len(confidence)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum().item() / n * abs(confidence[m].mean().item() - correct[m].float().mean().item())
    return total


class ClassificationMeter:
    """Sums per batch without syncing the device; reads out at the end of an epoch."""

    def __init__(self, ece_bins: int = 15):
        self.ece_bins = ece_bins
        self.loss_sum: torch.Tensor | float = 0.0
        self.n = 0
        self.conf: list[torch.Tensor] = []
        self.correct: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        """logits (N, K), y (N,), loss: the batch mean."""
        self.loss_sum = self.loss_sum + loss.detach().float() * len(y)
        self.n += len(y)
        p = torch.softmax(logits.detach().float(), dim=1)
        conf, pred = p.max(dim=1)
        self.conf.append(conf)
        self.correct.append(pred == y)

    def compute(self) -> dict[str, float]:
        if self.n == 0:
            return {}
        conf = torch.cat(self.conf).cpu()
        correct = torch.cat(self.correct).cpu()
        loss = float(self.loss_sum) / self.n
        return {"loss": loss, "accuracy": correct.float().mean().item(),
                "ece": ece(conf, correct, self.ece_bins)}
