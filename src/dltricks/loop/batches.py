"""Seeded mini-batches that a resumed run can continue exactly where it stopped."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from dltricks.errors import DltricksError

Source = tuple[torch.Tensor, torch.Tensor] | Dataset | DataLoader


class Batches:
    """Seeded mini-batches from tensors, a Dataset or a DataLoader, resumable mid-epoch.

    For tensors and Datasets the epoch's order is a permutation drawn from our own generator, so a
    run's data order depends only on its seed, and a resumed run skips exactly the steps it did.
    """

    def __init__(self, source: Source, batch_size: int, seed: int, device: torch.device,
                 fold_single: bool = True):
        self.source, self.batch_size, self.device = source, batch_size, device
        self.fold_single = fold_single  # training folds away a last batch of one; evaluation never
        self.gen = torch.Generator().manual_seed(seed)
        if isinstance(source, DataLoader):
            self.n = len(source.dataset)  # type: ignore[arg-type]
        elif isinstance(source, Dataset):
            self.n = len(source)  # type: ignore[arg-type]
        else:
            x, y = source
            if len(x) != len(y):
                raise DltricksError(f"x has {len(x)} samples but y has {len(y)}")
            self.n = len(x)
            # small data lives on the device once, instead of being copied every step
            if device.type != "cpu" and x.numel() * x.element_size() < 2**30:
                self.source = (x.to(device), y.to(device))
        if self.n == 0:
            raise DltricksError("the training data is empty")

    def __len__(self) -> int:
        if isinstance(self.source, DataLoader):
            return len(self.source)
        full, rest = divmod(self.n, self.batch_size)
        if not self.fold_single:
            return full + (rest > 0)
        # a last batch of one sample breaks BatchNorm's statistics in training: leave it out this epoch
        return full + (1 if rest > 1 or (rest == 1 and full == 0) else 0)

    def new_order(self) -> torch.Tensor:
        return torch.randperm(self.n, generator=self.gen)

    def index(self, perm: torch.Tensor, step: int) -> torch.Tensor | None:
        """The training-data positions of step ``step``'s samples (None for a user's DataLoader)."""
        if isinstance(self.source, DataLoader):
            return None
        return perm[step * self.batch_size:(step + 1) * self.batch_size]

    def epoch(self, epoch: int, perm: torch.Tensor, start: int = 0, epoch_rng: torch.Tensor | None = None
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        src = self.source
        if hasattr(getattr(src, "dataset", src), "set_epoch"):
            getattr(src, "dataset", src).set_epoch(epoch)
        if isinstance(src, DataLoader):  # the user's loader decides the order; skip what was done
            if start > 0 and epoch_rng is not None:
                # a loader draws its seeds (and a shuffle its order) from torch's RNG as it starts: replay
                # those draws from the state the epoch began with, then go on from where the run stopped
                now = torch.get_rng_state()
                torch.set_rng_state(epoch_rng)
                it = iter(src)
                next(it, None)
                torch.set_rng_state(now)
                start -= 1
            else:
                it = iter(src)
            for i, (x, y) in enumerate(it):
                if i >= start:
                    yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            return
        steps, b = len(self), self.batch_size
        if isinstance(src, Dataset):
            for i in range(start, steps):
                xs, ys = zip(*(src[int(j)] for j in perm[i * b:(i + 1) * b]))
                x, y = torch.stack([torch.as_tensor(v) for v in xs]), torch.stack([torch.as_tensor(v) for v in ys])
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            return
        xs, ys = src
        px, py = perm.to(xs.device), perm.to(ys.device)  # once an epoch, not once a step
        if xs.device == self.device and ys.device == self.device:
            for i in range(start, steps):
                yield xs[px[i * b:(i + 1) * b]], ys[py[i * b:(i + 1) * b]]
            return
        for i in range(start, steps):
            x, y = xs[px[i * b:(i + 1) * b]], ys[py[i * b:(i + 1) * b]]
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
