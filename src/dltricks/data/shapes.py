"""Synthetic medical-style segmentation: 2D images or 3D volumes with an organ-like region and lesion-like
blobs, deterministic by seed and generated in a second or two (no download, no cache needed).

Each sample has a smooth background with a bias field (the slow intensity drift of MR scanners), an
"organ": a large ellipse/ellipsoid with an irregular boundary and its own intensity, and 0-k "lesions":
small irregular blobs of random size whose contrast against the tissue around them varies in strength
and sign (hyper- or hypo-intense), then gaussian noise. Lesions sit inside the organ, as liver or brain
lesions do, and are small, so the foreground is rare: the class imbalance that Dice losses and
foreground oversampling address.

Labels: with ``num_classes = 2`` only lesions are labelled (1) and the organ is unlabelled context; with
``num_classes = 3`` the organ is 1 and lesions are 2.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from dltricks.data.bundle import DataBundle
from dltricks.data.mnist1d import cache_dir
from dltricks.data.patches import SegDataSpec, segmentation_bundle
from dltricks.data.registry import register_dataset

__all__ = ["ShapesSpec", "generate", "load_shapes"]


class ShapesSpec(SegDataSpec):
    name: str = "shapes"
    dims: Literal[2, 3] = Field(2, description="2 = images, 3 = volumes")
    size: int = Field(64, ge=8, le=512, description="side of each image or volume in pixels/voxels")
    num_train: int = Field(400, ge=2, description="training samples (validation is carved from them)")
    num_test: int = Field(100, ge=1)
    num_classes: Literal[2, 3] = Field(2, description="2 = background/lesion; 3 = background/organ/lesion")
    channels: int = Field(1, ge=1, le=4, description="image channels (modalities); each sees the anatomy "
                                                     "with its own contrasts")
    organ: bool = Field(True, description="draw the organ-like region (required for num_classes = 3)")
    organ_radius: tuple[float, float] = Field((0.2, 0.35), description="organ semi-axes, fraction of size")
    lesions: tuple[int, int] = Field((1, 3), description="min and max lesions per sample")
    lesion_radius: tuple[float, float] = Field((0.03, 0.08), description="lesion semi-axes, fraction of size")
    contrast: tuple[float, float] = Field((0.6, 1.4), description="lesion contrast against the tissue "
                                                                  "around it, in units of noise-free organ "
                                                                  "intensity; the sign is random")
    irregularity: float = Field(0.25, ge=0.0, le=1.0, description="boundary wobble, fraction of the radius")
    noise: float = Field(0.25, ge=0.0, description="std of gaussian image noise")
    bias_field: float = Field(0.2, ge=0.0, description="amplitude of the smooth intensity drift")
    data_seed: int = Field(0, ge=0, description="fixes the generated data across runs")

    @model_validator(mode="after")
    def _check(self) -> ShapesSpec:
        for key in ("organ_radius", "lesion_radius", "contrast", "lesions"):
            lo, hi = getattr(self, key)
            if not 0 <= lo <= hi:
                raise ValueError(f"{key} must be (min, max) with 0 <= min <= max, got {(lo, hi)}")
        if self.num_classes == 3 and not self.organ:
            raise ValueError("num_classes = 3 labels the organ; set organ = true or num_classes = 2")
        if max(self.organ_radius) >= 0.5 or max(self.lesion_radius) >= 0.5:
            raise ValueError("organ_radius and lesion_radius are fractions of the size and must stay below 0.5")
        return self


class _Draws:
    """Random draws for a chunk of samples, each from its own generator seeded by (seed, index): sample
    ``i`` is the same whatever the chunking or the number of samples asked for."""

    def __init__(self, seed: int, indices: range):
        self.gens = [torch.Generator().manual_seed(int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))
                     for i in indices]
        self.n = len(self.gens)

    def rand(self, *shape: int) -> torch.Tensor:
        """(n, *shape) uniform in [0, 1)."""
        return torch.stack([torch.rand(*shape, generator=g) for g in self.gens])

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.stack([torch.randn(*shape, generator=g) for g in self.gens])

    def u(self, lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * self.rand(*shape)

    def randint(self, lo: int, hi: int) -> torch.Tensor:
        """(n,) integers in [lo, hi]."""
        return torch.stack([torch.randint(lo, hi + 1, (), generator=g) for g in self.gens])


def _smooth_field(r: _Draws, dims: int, size: int, knots: int = 4) -> torch.Tensor:
    """(n, *spatial) smooth random field, roughly N(0, 1) at the knots: noise on a coarse grid, upsampled."""
    coarse = r.randn(1, *[knots] * dims)
    mode = "bicubic" if dims == 2 else "trilinear"
    return F.interpolate(coarse, size=[size] * dims, mode=mode, align_corners=True)[:, 0]


def _random_rotation(r: _Draws, dims: int) -> torch.Tensor:
    """(n, dims, dims) random orthogonal matrices (QR of a gaussian matrix)."""
    q, rr = torch.linalg.qr(r.randn(dims, dims))
    return q * torch.sign(torch.diagonal(rr, dim1=-2, dim2=-1)).unsqueeze(-2)


def _blob(coords: torch.Tensor, centre: torch.Tensor, radii: torch.Tensor, rot: torch.Tensor,
          wobble: torch.Tensor, size: int) -> torch.Tensor:
    """Approximate signed distance in voxels (negative inside) to irregular ellipsoids.

    coords (dims, *spatial) in [-1, 1]; centre, radii (n, dims) in the same units; rot (n, dims, dims);
    wobble (n, *spatial) in units of the radius. Returns (n, *spatial).
    """
    dims = coords.shape[0]
    view = (-1, *[1] * dims)
    p = [coords[i].unsqueeze(0) - centre[:, i].view(view) for i in range(dims)]
    r2 = torch.zeros_like(wobble)
    for j in range(dims):  # coordinate j in the blob's own axes; explicit loops beat a strided einsum here
        local = sum(rot[:, i, j].view(view) * p[i] for i in range(dims)) / radii[:, j].view(view)
        r2 += local * local
    mean_r = radii.mean(1).view(view)
    return (r2.sqrt() - 1 + wobble) * mean_r * size / 2


def _generate_chunk(spec: ShapesSpec, r: _Draws, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d, s, n, ch = spec.dims, spec.size, r.n, spec.channels
    one = [1] * d
    label = torch.zeros((n, *[s] * d), dtype=torch.long)
    # tissue intensity per channel before noise: background level + bias field
    img = r.u(-0.2, 0.2, ch).view(n, ch, *one) + spec.bias_field * _smooth_field(r, d, s, knots=3).unsqueeze(1)
    organ_centre = torch.zeros(n, d)
    organ_radii = torch.full((n, d), 0.6)  # lesions anywhere central when there is no organ
    organ_rot = torch.eye(d).repeat(n, 1, 1)
    if spec.organ:
        organ_radii = 2 * r.u(*spec.organ_radius, d)  # fractions of the size -> units of [-1, 1]
        organ_centre = r.u(-1, 1, d) * (0.95 - organ_radii).clamp_min(0)  # keep the organ in view
        organ_rot = _random_rotation(r, d)
        sd = _blob(coords, organ_centre, organ_radii, organ_rot, spec.irregularity * _smooth_field(r, d, s), s)
        soft = torch.sigmoid(-sd / 0.5)  # partial-volume edge about one voxel wide
        level = r.u(0.7, 1.3, ch) * torch.where(r.rand(ch) < 0.8, 1, -1)  # mostly brighter than background
        img = img + soft.unsqueeze(1) * level.view(n, ch, *one)
        if spec.num_classes == 3:
            label = torch.where(sd < 0, 1, label)
    lesion_class = spec.num_classes - 1
    count = r.randint(*spec.lesions)
    for k in range(spec.lesions[1]):
        active = (count > k).view(n, *one)
        radii = 2 * r.u(*spec.lesion_radius, 1) * r.u(0.7, 1.0, d)  # mildly elongated
        # inside the organ: a point of the organ's inner ellipsoid, or anywhere central without an organ
        direction = r.randn(d)
        direction = direction / direction.norm(dim=1, keepdim=True) * r.rand(1) ** (1 / d)
        centre = organ_centre + torch.einsum("nij,nj->ni", organ_rot, direction * organ_radii * 0.75)
        sd = _blob(coords, centre, radii, _random_rotation(r, d),
                   spec.irregularity * _smooth_field(r, d, s, knots=3), s)
        soft = torch.sigmoid(-sd / 0.5) * active
        sign = torch.where(r.rand(1) < 0.5, 1.0, -1.0)  # hyper- or hypo-intense
        contrast = r.u(*spec.contrast, 1) * sign * r.u(0.6, 1.0, ch)  # shows in every channel, not equally
        img = img + soft.unsqueeze(1) * contrast.view(n, ch, *one)
        label = torch.where((sd < 0) & active, lesion_class, label)
    img = img + spec.noise * r.randn(ch, *[s] * d)
    return img.float(), label


def generate(spec: ShapesSpec, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples ``x`` (n, C, *spatial) float32 and ``y`` (n, *spatial) int64. Sample ``i`` is a pure
    function of (spec, seed, i). Generated in chunks to bound memory for large volumes."""
    d, s = spec.dims, spec.size
    axis = (torch.arange(s, dtype=torch.float32) + 0.5) / s * 2 - 1  # pixel centres in [-1, 1]
    coords = torch.stack(torch.meshgrid(*[axis] * d, indexing="ij"))
    chunk = max(1, 2**21 // s**d)
    xs, ys = [], []
    for start in range(0, n, chunk):
        x, y = _generate_chunk(spec, _Draws(seed, range(start, min(n, start + chunk))), coords)
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


_GENERATOR_VERSION = 1  # bump when the generator changes, so that stale caches are not read
_CACHE_FROM = 2**22  # voxels; smaller sets regenerate faster than a cache pays for itself


def cached_generate(spec: ShapesSpec, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`generate`, kept on disk (``$DLTRICKS_CACHE``) for large sets so that sweeps that load the
    same volumes many times generate them once."""
    if n * spec.size**spec.dims < _CACHE_FROM:
        return generate(spec, n, seed)
    keys = {k: v for k, v in spec.model_dump(mode="json").items() if k not in _NOT_GENERATION}
    blob = json.dumps({"spec": keys, "n": n, "seed": seed, "v": _GENERATOR_VERSION}, sort_keys=True)
    path = cache_dir() / f"shapes-{hashlib.sha256(blob.encode()).hexdigest()[:16]}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                return torch.from_numpy(f["x"]), torch.from_numpy(f["y"]).long()
        except (OSError, ValueError, KeyError):
            pass  # a corrupt cache is regenerated, not trusted
    x, y = generate(spec, n, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, x=x.numpy(), y=y.numpy().astype(np.uint8))
    os.replace(tmp, path)  # atomic: parallel workers never read half a file
    return x, y


# keys that shape training, not the generated data
_NOT_GENERATION = {"name", "val_fraction", "augment", "patch_size", "fg_oversample", "patches_per_epoch",
                   "sw_overlap", "num_train", "num_test"}


@register_dataset("shapes", ShapesSpec)
def load_shapes(spec: ShapesSpec, seed: int) -> DataBundle:
    # train and test come from separate streams, so changing num_train leaves the test set alone
    base = spec.data_seed * 1_000_003
    train = cached_generate(spec, spec.num_train, base + 1)
    test = cached_generate(spec, spec.num_test, base + 2)
    names = ["background", "lesion"] if spec.num_classes == 2 else ["background", "organ", "lesion"]
    return segmentation_bundle(spec, train, test, seed, spec.num_classes, names)


def foreground_share(y: torch.Tensor) -> list[float]:
    """Share of pixels per class in label maps ``y``: how imbalanced the data is."""
    counts = torch.bincount(y.flatten(), minlength=int(y.max()) + 1).float()
    return (counts / counts.sum()).tolist()

