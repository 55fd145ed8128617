"""Batched augmentation for signals, images and volumes, with the mask moved alongside the image.

    aug = Augment(["flip", "rotate", "noise"], dims=3, rotate=15, noise=0.1, seed=0)
    x = aug(x)                 # x: (N, C, *spatial)
    x, mask = aug(x, mask)     # mask: (N, *spatial) label map or (N, K, *spatial) channel masks

Geometric ops (flip, rotate90, rotate, scale, shift, crop, elastic) move image and mask together: the
image is interpolated linearly, the mask by nearest neighbour so that labels stay labels. Intensity ops
(noise, gamma, contrast) touch the image only. Every op draws its own random value per sample.

Ops that resample (rotate, scale, shift, crop with resize, elastic) and stand next to each other in
``ops`` are fused into one sampling grid: the image is interpolated once, which is faster and blurs less
than one interpolation per op. Flips, quarter turns and plain crops are exact index operations.

Random numbers come from a CPU ``torch.Generator`` (``seed=`` or ``generator=``), so a seeded
augmentation gives the same result on CPU and GPU tensors; full-size noise is drawn on the tensor's
device from a generator seeded by it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from dltricks.errors import DltricksError, did_you_mean, one_of

__all__ = ["DEFAULTS", "GEOMETRIC", "INTENSITY", "OPS", "SPEC_ORDER", "Augment", "from_spec"]

GEOMETRIC = ("flip", "rotate90", "rotate", "scale", "shift", "crop", "elastic")
INTENSITY = ("noise", "gamma", "contrast")
OPS = GEOMETRIC + INTENSITY
_RESAMPLING = {"rotate", "scale", "shift", "elastic"}  # plus crop when crop_resize
_ALIASES = {"translate": "shift", "rot90": "rotate90"}
_NEED_PLANE = {"rotate90", "rotate"}  # no rotation of a 1D signal

# Magnitudes used when an op is listed without its parameter (see AugmentSpec for their meaning).
DEFAULTS: dict[str, Any] = {
    "flip": 0.5, "rotate90": 0.5, "rotate": 15.0, "scale": 0.15, "shift": 0.1, "crop": 0.2,
    "elastic": 0.03, "noise": 0.1, "gamma": 0.3, "contrast": 0.25,
    "crop_mode": "random", "crop_resize": True, "elastic_grid": 5, "padding": "zeros", "planes": None,
}
# The order from_spec applies a recipe's ops in: geometry first (resampling ops adjacent so they fuse),
# noise last so that it is not smoothed by interpolation or stretched by gamma.
SPEC_ORDER = ("flip", "rotate90", "rotate", "scale", "shift", "crop", "elastic", "gamma", "contrast", "noise")


class Augment:
    """Random augmentation of a batch ``(N, C, *spatial)``, optionally with its mask.

    ``ops`` are names from :data:`OPS` (``translate`` = ``shift``), applied in the order given;
    ``dims`` is the number of spatial dims (1, 2 or 3). Parameters (defaults in :data:`DEFAULTS`):

    - ``flip``: probability of flipping each spatial axis; ``rotate90``: probability of a quarter turn
      (1, 2 or 3 times) in a random plane with equal sides;
    - ``rotate``: max angle in degrees (in 3D about each axis in turn); ``planes``: the spatial-axis pairs
      that rotations use, e.g. ``[(1, 2)]`` for in-plane only on anisotropic volumes (default: all);
    - ``scale``: max relative zoom; ``shift``: max translation as a fraction of each side;
    - ``crop``: fraction of each side cut away, ``crop_mode`` ``"random"`` or ``"center"``,
      ``crop_resize`` to resample back to the input size (else the output is smaller);
    - ``elastic``: std of a smooth displacement as a fraction of each side, on a coarse grid of
      ``elastic_grid`` control points per axis;
    - ``noise``: std of additive gaussian noise; ``gamma``: max ``|log gamma|``; ``contrast``: max
      relative contrast change about each sample's mean;
    - ``padding``: how the image is filled outside its border (``zeros``, ``border``, ``reflection``);
      the mask is always filled with 0 (background).
    """

    def __init__(self, ops: Sequence[str], dims: int, *, seed: int | None = None,
                 generator: torch.Generator | None = None, **params: Any):
        if dims not in (1, 2, 3):
            raise DltricksError(f"augment: dims must be 1, 2 or 3, got {dims}")
        names = [_ALIASES.get(op, op) for op in ops]
        for op in names:
            if op not in OPS:
                raise DltricksError(f"augment: unknown op {op!r}{did_you_mean(op, OPS)}; valid: {one_of(OPS)}")
            if op in _NEED_PLANE and dims == 1:
                raise DltricksError(f"augment: {op} needs 2D or 3D data; for 1D signals use flip, shift, "
                                    "scale, crop, elastic, noise, gamma or contrast")
        params = {_ALIASES.get(k, k): v for k, v in params.items()}
        for k in params:
            if k not in DEFAULTS:
                raise DltricksError(f"augment: unknown parameter {k!r}{did_you_mean(k, DEFAULTS)}; "
                                    f"valid: {one_of(DEFAULTS)}")
        self.ops = names
        self.dims = dims
        self.params = {**DEFAULTS, **params}
        if self.params["crop_mode"] not in ("random", "center"):
            raise DltricksError(f"augment: crop_mode must be random or center, got {self.params['crop_mode']!r}")
        if self.params["padding"] not in ("zeros", "border", "reflection"):
            raise DltricksError(f"augment: padding must be zeros, border or reflection, "
                                f"got {self.params['padding']!r}")
        all_planes = [(a, b) for a in range(dims) for b in range(a + 1, dims)]
        planes = self.params["planes"]
        self.planes = all_planes if planes is None else [tuple(p) for p in planes]
        for p in self.planes:
            if len(p) != 2 or p[0] == p[1] or not all(0 <= a < dims for a in p):
                raise DltricksError(f"augment: planes must be pairs of distinct spatial axes in 0..{dims - 1}, "
                                    f"got {planes!r}")
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(seed)
        self.generator = generator

    def __repr__(self) -> str:
        shown = {op: self.params[op] for op in self.ops}
        return f"Augment({self.ops}, dims={self.dims}, {shown})"

    # ---- entry point --------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                 generator: torch.Generator | None = None):
        """Augment ``x`` (N, C, *spatial); return ``x`` or ``(x, mask)`` when a mask is given.

        ``mask`` is a label map (N, *spatial) or channel masks (N, K, *spatial) of any dtype.
        """
        if x.dim() != self.dims + 2:
            raise DltricksError(f"augment: expected a batch (N, C, *spatial) with {self.dims} spatial dims, "
                                f"got shape {tuple(x.shape)}")
        if mask is not None:
            label_map = mask.dim() == x.dim() - 1
            if mask.shape[0] != x.shape[0] or (mask.shape[-self.dims:] != x.shape[-self.dims:]) or \
                    mask.dim() not in (x.dim() - 1, x.dim()):
                raise DltricksError(f"augment: mask shape {tuple(mask.shape)} does not fit image shape "
                                    f"{tuple(x.shape)}; expected (N, *spatial) or (N, K, *spatial)")
            if label_map:
                mask = mask.unsqueeze(1)
        g = generator if generator is not None else self.generator
        pending: list[str] = []  # resampling ops waiting to be fused into one grid
        for op in self.ops:
            if op in _RESAMPLING or (op == "crop" and self.params["crop_resize"]):
                pending.append(op)
                continue
            if pending:
                x, mask = self._resample(x, mask, pending, g)
                pending = []
            x, mask = getattr(self, f"_{op}")(x, mask, g)
        if pending:
            x, mask = self._resample(x, mask, pending, g)
        if mask is None:
            return x
        return x, (mask.squeeze(1) if label_map else mask)

    # ---- random numbers -----------------------------------------------------------------------------
    @staticmethod
    def _rand(n: int, g: torch.Generator | None, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        """(n,) uniform in [lo, hi) on the CPU, so that a seed gives the same draw on any device."""
        return lo + (hi - lo) * torch.rand(n, generator=g)

    @staticmethod
    def _device_generator(g: torch.Generator | None, device: torch.device) -> torch.Generator | None:
        if g is None or device.type == "cpu":
            return g
        seed = int(torch.randint(0, 2**62, (1,), generator=g))
        return torch.Generator(device=device).manual_seed(seed)

    # ---- exact geometric ops ------------------------------------------------------------------------
    def _flip(self, x, mask, g):
        n, p = x.shape[0], float(self.params["flip"])
        for axis in range(2, x.dim()):
            do = (self._rand(n, g) < p).to(x.device).view(-1, *[1] * (x.dim() - 1))
            x = torch.where(do, x.flip(axis), x)
            if mask is not None:
                mask = torch.where(do, mask.flip(axis), mask)
        return x, mask

    def _rotate90(self, x, mask, g):
        spatial = x.shape[2:]
        planes = [p for p in self.planes if spatial[p[0]] == spatial[p[1]]]
        if not planes:
            raise DltricksError(f"augment: rotate90 needs a plane with equal sides; spatial shape "
                                f"{tuple(spatial)} has none among planes {self.planes}")
        n = x.shape[0]
        do = self._rand(n, g) < float(self.params["rotate90"])
        plane = torch.randint(len(planes), (n,), generator=g)
        k = torch.randint(1, 4, (n,), generator=g)
        x = x.clone()
        mask = mask.clone() if mask is not None else None
        for pi, (a, b) in enumerate(planes):
            for kk in (1, 2, 3):
                idx = torch.nonzero(do & (plane == pi) & (k == kk)).flatten()
                if len(idx) == 0:
                    continue
                idx = idx.to(x.device)
                x[idx] = torch.rot90(x[idx], kk, (a + 2, b + 2))
                if mask is not None:
                    mask[idx] = torch.rot90(mask[idx], kk, (a + 2, b + 2))
        return x, mask

    def _crop(self, x, mask, g):
        """Crop without resize: every sample to the same smaller size, at its own offset."""
        keep = [max(1, round(s * (1 - float(self.params["crop"])))) for s in x.shape[2:]]
        n = x.shape[0]
        if self.params["crop_mode"] == "center":
            starts = [[(s - k) // 2] * n for s, k in zip(x.shape[2:], keep)]
        else:
            starts = [(self._rand(n, g) * (s - k + 1)).long().clamp_max(s - k).tolist()
                      for s, k in zip(x.shape[2:], keep)]

        def window(t: torch.Tensor, i: int) -> torch.Tensor:
            sl = tuple(slice(st[i], st[i] + k) for st, k in zip(starts, keep))
            return t[(i, slice(None)) + sl]

        x = torch.stack([window(x, i) for i in range(n)])
        if mask is not None:
            mask = torch.stack([window(mask, i) for i in range(n)])
        return x, mask

    # ---- resampling ops, fused into one grid --------------------------------------------------------
    def _resample(self, x, mask, ops: list[str], g):
        """Compose the affine ops into one matrix per sample, add elastic displacement, sample once."""
        n, d = x.shape[0], self.dims
        spatial = list(x.shape[2:])
        # affine_grid orders coordinates x, y, z = the last spatial axis first
        sizes_xyz = torch.tensor(spatial[::-1], dtype=torch.float64)
        theta = torch.eye(d + 1, dtype=torch.float64).repeat(n, 1, 1)  # output coords -> input coords
        disp = None
        for op in ops:
            if op == "elastic":
                disp = self._elastic_field(n, spatial, g) if disp is None else disp + self._elastic_field(
                    n, spatial, g)
            else:
                theta = theta @ getattr(self, f"_{op}_matrix")(n, sizes_xyz, g)
        if d == 1:  # sample a signal as a 1-row image: grid_sample has no 1D mode
            x = x.unsqueeze(2)
            mask = mask.unsqueeze(2) if mask is not None else None
            theta = _embed_1d(theta)
            disp = torch.cat([disp, torch.zeros_like(disp)], dim=-1).unsqueeze(1) if disp is not None else None
        grid_shape = [n, 1, *x.shape[2:]]
        grid = F.affine_grid(theta[:, :-1].to(device=x.device, dtype=torch.float32), grid_shape,
                             align_corners=False)
        if disp is not None:
            grid = grid + disp.to(device=x.device, dtype=grid.dtype)
        dtype = x.dtype
        x = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode=self.params["padding"],
                          align_corners=False).to(dtype)
        if mask is not None:
            mdtype = mask.dtype
            mask = F.grid_sample(mask.float(), grid, mode="nearest", padding_mode="zeros",
                                 align_corners=False)
            mask = (mask.round() if not mdtype.is_floating_point else mask).to(mdtype)
        if d == 1:
            x = x.squeeze(2)
            mask = mask.squeeze(2) if mask is not None else None
        return x, mask

    def _rotate_matrix(self, n, sizes_xyz, g):
        """Rotations by up to ``rotate`` degrees in each plane. Built in voxel units and conjugated into
        normalised coordinates, so that a non-square image turns rigidly instead of shearing."""
        d = self.dims
        max_rad = math.radians(float(self.params["rotate"]))
        r = torch.eye(d + 1, dtype=torch.float64).repeat(n, 1, 1)
        for a, b in self.planes:
            ang = self._rand(n, g, -max_rad, max_rad).double()
            i, j = d - 1 - a, d - 1 - b  # spatial axis -> affine_grid coordinate index
            rot = torch.eye(d + 1, dtype=torch.float64).repeat(n, 1, 1)
            rot[:, i, i], rot[:, i, j] = ang.cos(), -ang.sin()
            rot[:, j, i], rot[:, j, j] = ang.sin(), ang.cos()
            r = r @ rot
        half = torch.diag(torch.cat([sizes_xyz / 2, torch.ones(1, dtype=torch.float64)]))
        return torch.linalg.inv(half) @ r @ half

    def _scale_matrix(self, n, sizes_xyz, g):
        s = float(self.params["scale"])
        zoom = self._rand(n, g, 1 - s, 1 + s).double()
        m = torch.eye(self.dims + 1, dtype=torch.float64).repeat(n, 1, 1)
        for i in range(self.dims):
            m[:, i, i] = 1 / zoom  # zoom in = look at a smaller input region
        return m

    def _shift_matrix(self, n, sizes_xyz, g):
        s = float(self.params["shift"])
        m = torch.eye(self.dims + 1, dtype=torch.float64).repeat(n, 1, 1)
        for i in range(self.dims):
            m[:, i, -1] = 2 * self._rand(n, g, -s, s).double()  # normalised coords span 2
        return m

    def _crop_matrix(self, n, sizes_xyz, g):
        """Crop and resize back: a zoom by 1/(1 - crop) centred on a random (or the central) window."""
        keep = 1 - float(self.params["crop"])
        m = torch.eye(self.dims + 1, dtype=torch.float64).repeat(n, 1, 1)
        for i in range(self.dims):
            m[:, i, i] = keep
            if self.params["crop_mode"] == "random":
                m[:, i, -1] = self._rand(n, g, -(1 - keep), 1 - keep).double()
        return m

    def _elastic_field(self, n, spatial, g) -> torch.Tensor:
        """(n, *spatial, dims) smooth displacement in normalised units: gaussian noise on a coarse grid of
        control points, upsampled smoothly (the B-spline-like deformation of medical augmentation)."""
        d, k = self.dims, int(self.params["elastic_grid"])
        coarse = torch.randn(n, d, *[k] * d, generator=g) * 2 * float(self.params["elastic"])
        mode = {1: "linear", 2: "bicubic", 3: "trilinear"}[d]
        field = F.interpolate(coarse, size=spatial, mode=mode, align_corners=True)
        # channel c displaces coordinate c, which is spatial axis d-1-c; nothing in channel order to swap
        return field.permute(0, *range(2, d + 2), 1)

    # ---- intensity ops: the image only --------------------------------------------------------------
    def _noise(self, x, mask, g):
        dg = self._device_generator(g, x.device)
        noise = torch.randn(x.shape, generator=dg, device=x.device, dtype=x.dtype)
        return x + float(self.params["noise"]) * noise, mask

    def _gamma(self, x, mask, g):
        """``x -> lo + (hi - lo) * ((x - lo) / (hi - lo)) ** gamma`` per sample: a gamma curve on the
        sample's own intensity range, so that the range (and so any normalisation) is kept."""
        n, lim = x.shape[0], float(self.params["gamma"])
        gamma = self._rand(n, g, -lim, lim).exp().to(x.device, x.dtype).view(-1, *[1] * (x.dim() - 1))
        flat = x.flatten(1)
        lo = flat.amin(1).view_as(gamma)
        hi = flat.amax(1).view_as(gamma)
        span = (hi - lo).clamp_min(1e-8)
        return lo + span * ((x - lo) / span).clamp(0, 1).pow(gamma), mask

    def _contrast(self, x, mask, g):
        n, c = x.shape[0], float(self.params["contrast"])
        factor = self._rand(n, g, 1 - c, 1 + c).to(x.device, x.dtype).view(-1, *[1] * (x.dim() - 1))
        mean = x.mean(dim=tuple(range(2, x.dim())), keepdim=True)
        return (x - mean) * factor + mean, mask


def _embed_1d(theta: torch.Tensor) -> torch.Tensor:
    """(n, 2, 2) affine on a line -> (n, 3, 3) affine on a 1-row image that leaves the row alone."""
    out = torch.eye(3, dtype=theta.dtype).repeat(theta.shape[0], 1, 1)
    out[:, 0, 0], out[:, 0, 2] = theta[:, 0, 0], theta[:, 0, 1]
    return out


class _SpecAugment:
    """A recipe's augmentation as a training-batch transform ``(x, y) -> (x, y)``."""

    def __init__(self, aug: Augment, segmentation: bool):
        self.aug = aug
        self.segmentation = segmentation

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.segmentation:
            return self.aug(x, y)
        return self.aug(x), y  # class labels do not move with the image

    def __repr__(self) -> str:
        return f"{self.aug!r} on {'image and mask' if self.segmentation else 'image'}"


def from_spec(spec: Any, dims: int, task: str, seed: int | None = None) -> Callable | None:
    """The training-batch transform ``(x, y) -> (x, y)`` for a recipe's ``data.augment``, or None when
    every op is off.

    ``dims`` is the data's spatial rank (``len(bundle.in_shape) - 1``); ``task`` is ``"segmentation"``
    (``y`` is a label map (N, *spatial) that geometric ops move with the image) or ``"classification"``
    (``y`` is left alone). ``seed`` makes the sequence of augmentations reproducible.
    """
    on = [op for op in SPEC_ORDER if float(getattr(spec, op, 0) or 0) > 0]
    if not on:
        return None
    if dims not in (1, 2, 3):
        raise DltricksError(f"data.augment needs signals, images or volumes (N, C, *spatial); "
                            f"this data has {dims} spatial dims")
    for op in on:
        if op in _NEED_PLANE and dims == 1:
            raise DltricksError(f"data.augment.{op} needs 2D or 3D data; this dataset is 1D "
                                "(use flip, shift, scale, crop, elastic, noise, gamma or contrast)")
    params = {op: getattr(spec, op) for op in on}
    params.update(crop_mode=spec.crop_mode, crop_resize=spec.crop_resize)
    aug = Augment(on, dims, seed=seed, **params)
    return _SpecAugment(aug, segmentation=task == "segmentation")
