"""Seeded mini-batches that a resumed run can continue exactly where it stopped."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from dltricks.errors import DltricksError
from dltricks.loop.distributed import Dist, shard

Source = tuple[torch.Tensor, torch.Tensor] | Dataset | DataLoader


class Batches:
    """Seeded mini-batches from tensors, a Dataset or a DataLoader, resumable mid-epoch.

    For tensors and Datasets the epoch's order is a permutation drawn from our own generator, so a
    run's data order depends only on its seed, and a resumed run skips exactly the steps it did.

    ``dist`` (one of several ranks): every rank draws the same order and yields only its share of each batch.
    """

    def __init__(self, source: Source, batch_size: int, seed: int, device: torch.device,
                 fold_single: bool = True, dist: Dist | None = None):
        self.source, self.batch_size, self.device, self.dist = source, batch_size, device, dist
        if dist is not None and isinstance(source, DataLoader):
            raise DltricksError("training on several processes needs tensors or a Dataset: a DataLoader brings "
                                "its own order, which the ranks cannot share out")
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
        # a last batch of one sample breaks BatchNorm's statistics in training: leave it out this epoch (and
        # one too small to give every rank a sample: ranks must take the same steps)
        least = max(2, self.dist.world if self.dist is not None else 1)
        return full + (1 if rest >= least or (rest > 0 and full == 0) else 0)

    def step_size(self, perm: torch.Tensor, step: int) -> int:
        """Samples in step ``step``'s whole batch, over all ranks."""
        return len(perm[step * self.batch_size:(step + 1) * self.batch_size])

    def new_order(self) -> torch.Tensor:
        return torch.randperm(self.n, generator=self.gen)

    def index(self, perm: torch.Tensor, step: int) -> torch.Tensor | None:
        """The training-data positions of step ``step``'s samples (None for a user's DataLoader)."""
        if isinstance(self.source, DataLoader):
            return None
        return shard(perm[step * self.batch_size:(step + 1) * self.batch_size], self.dist)

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
        steps, b, d = len(self), self.batch_size, self.dist
        if isinstance(src, Dataset):
            for i in range(start, steps):
                xs, ys = zip(*(src[int(j)] for j in shard(perm[i * b:(i + 1) * b], d)))
                x, y = torch.stack([torch.as_tensor(v) for v in xs]), torch.stack([torch.as_tensor(v) for v in ys])
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            return
        xs, ys = src
        px, py = perm.to(xs.device), perm.to(ys.device)  # once an epoch, not once a step
        if xs.device == self.device and ys.device == self.device:
            for i in range(start, steps):
                yield xs[shard(px[i * b:(i + 1) * b], d)], ys[shard(py[i * b:(i + 1) * b], d)]
            return
        for i in range(start, steps):
            x, y = xs[shard(px[i * b:(i + 1) * b], d)], ys[shard(py[i * b:(i + 1) * b], d)]
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
