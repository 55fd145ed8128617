"""Augmentation: image and mask stay aligned under every geometric op, in 2D and 3D; intensity ops leave
masks alone; a seed fixes the result."""

from __future__ import annotations

import pytest
import torch

from dltricks.data.augment import GEOMETRIC, INTENSITY, Augment, from_spec
from dltricks.data.shapes import ShapesSpec, generate
from dltricks.errors import DltricksError
from dltricks.recipe import AugmentSpec

# op -> (params, exact): exact ops move pixels without interpolation
GEOMETRIC_CASES = {
    "flip": ({"flip": 1.0}, True),
    "rotate90": ({"rotate90": 1.0}, True),
    "crop_plain": ({"crop": 0.25, "crop_resize": False}, True),
    "rotate": ({"rotate": 40.0}, False),
    "scale": ({"scale": 0.3}, False),
    "shift": ({"shift": 0.2}, False),
    "crop_resize": ({"crop": 0.3}, False),
    "crop_center": ({"crop": 0.3, "crop_mode": "center"}, False),
    "elastic": ({"elastic": 0.04}, False),
}


def _op(case: str) -> str:
    return "crop" if case.startswith("crop") else case


def _masks(dims: int, n: int = 6) -> torch.Tensor:
    """(n, *spatial) binary label maps with organ- and lesion-like blobs."""
    spec = ShapesSpec(dims=dims, size=32 if dims == 2 else 20, num_classes=3, lesion_radius=(0.08, 0.15))
    _, y = generate(spec, n, seed=5)
    return (y > 0).long()


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return (2 * (a & b).sum() / (a.sum() + b.sum()).clamp_min(1)).item()


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("case", list(GEOMETRIC_CASES))
def test_geometric_ops_keep_image_and_mask_aligned(case: str, dims: int) -> None:
    mask = _masks(dims)
    image = mask.float().unsqueeze(1)  # intensity equals the mask: they must still coincide afterwards
    params, exact = GEOMETRIC_CASES[case]
    aug = Augment([_op(case)], dims, seed=1, **params)
    out, out_mask = aug(image, mask)
    assert out_mask.dtype == mask.dtype and out.shape[0] == len(mask)
    assert out.shape[2:] == out_mask.shape[1:]
    if out_mask.shape == mask.shape:
        assert not torch.equal(out_mask, mask), "the op should have moved something"
    if exact:
        assert torch.equal(out[:, 0], out_mask.float())
    else:
        # bilinear image vs nearest mask differ only on boundary pixels
        assert _dice(out[:, 0] > 0.5, out_mask.bool()) > 0.93
    if not exact and case != "crop_center":  # centre crops are the same for every draw
        # the check has teeth: the same op with another draw does not line up as well
        other, _ = Augment([_op(case)], dims, seed=2, **params)(image, mask)
        assert _dice(other[:, 0] > 0.5, out_mask.bool()) < _dice(out[:, 0] > 0.5, out_mask.bool())


@pytest.mark.parametrize("dims", [2, 3])
def test_fused_geometric_chain_keeps_alignment_and_label_values(dims: int) -> None:
    y = _masks(dims) * 2  # labels {0, 2}: nearest sampling must not invent a 1
    aug = Augment(["flip", "rotate90", "rotate", "scale", "shift", "elastic"], dims, seed=0, flip=0.5)
    out, out_y = aug(y.float().unsqueeze(1), y)
    assert set(torch.unique(out_y).tolist()) <= {0, 2}
    assert _dice(out[:, 0] > 1.0, out_y > 0) > 0.9


@pytest.mark.parametrize("op", INTENSITY)
def test_intensity_ops_change_image_only(op: str) -> None:
    mask = _masks(2)
    image = mask.float().unsqueeze(1) + 0.1 * torch.randn(mask.shape).unsqueeze(1)
    out, out_mask = Augment([op], 2, seed=0, **{op: 0.5})(image, mask)
    assert torch.equal(out_mask, mask)
    assert out.shape == image.shape and not torch.allclose(out, image)


def test_gamma_keeps_each_sample_range() -> None:
    x = torch.rand(4, 1, 16, 16) * 3 - 1
    out = Augment(["gamma"], 2, seed=0, gamma=0.5)(x)
    assert torch.allclose(out.flatten(1).amin(1), x.flatten(1).amin(1), atol=1e-5)
    assert torch.allclose(out.flatten(1).amax(1), x.flatten(1).amax(1), atol=1e-5)


def test_seeded_augment_is_deterministic() -> None:
    mask = _masks(3, n=3)
    image = torch.randn(3, 2, *mask.shape[1:])
    ops = ["flip", "rotate", "elastic", "noise", "gamma"]
    a = Augment(ops, 3, seed=7)(image, mask)
    b = Augment(ops, 3, seed=7)(image, mask)
    c = Augment(ops, 3, seed=8)(image, mask)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    aug = Augment(ops, 3)
    assert torch.equal(aug(image, generator=g1), aug(image, generator=g2))


def test_zero_magnitude_resampling_is_identity() -> None:
    """Pins the coordinate conventions: an identity grid samples exactly the pixel centres."""
    x = torch.randn(2, 3, 9, 14)
    out = Augment(["shift", "scale", "rotate"], 2, shift=0.0, scale=0.0, rotate=0.0)(x)
    assert torch.allclose(out, x, atol=1e-5)


def test_rotation_is_rigid_on_non_square_images() -> None:
    """Rotating in voxel units (not normalised ones) keeps an ellipse's area and axes on a 60x90 image."""
    yy, xx = torch.meshgrid(torch.arange(60) + 0.5, torch.arange(90) + 0.5, indexing="ij")
    img = ((((xx - 45) / 20) ** 2 + ((yy - 30) / 6) ** 2) < 1).float()[None, None].repeat(4, 1, 1, 1)
    out = Augment(["rotate"], 2, seed=0, rotate=90)(img) > 0.5
    for m in out[:, 0]:
        assert abs(m.sum().item() - img[0, 0].sum().item()) < 0.04 * img[0, 0].sum().item()
        ys, xs = torch.nonzero(m, as_tuple=True)
        axes = torch.linalg.eigvalsh(torch.cov(torch.stack([xs.float(), ys.float()]))).sqrt()
        assert axes[1] == pytest.approx(20 / 2, rel=0.08) and axes[0] == pytest.approx(6 / 2, rel=0.12)


def test_rotate_in_chosen_planes_only() -> None:
    """planes=[(1, 2)]: in-plane rotation of a volume leaves every slice along axis 0 in place."""
    x = torch.zeros(2, 1, 6, 16, 16)
    x[:, :, 2] = 1.0  # one bright slice along axis 0
    out = Augment(["rotate"], 3, seed=0, rotate=30, planes=[(1, 2)])(x)
    assert out[:, :, [0, 1, 3, 4, 5]].abs().max() == 0
    assert out[:, :, 2].sum() > 0


def test_rotate90_on_non_square_volume_uses_the_square_plane() -> None:
    x = torch.arange(2 * 4 * 8 * 8, dtype=torch.float32).view(2, 1, 4, 8, 8)
    out = Augment(["rotate90"], 3, seed=0, rotate90=1.0)(x)
    assert out.shape == x.shape
    for i in range(2):
        assert any(torch.equal(out[i], torch.rot90(x[i], k, (2, 3))) for k in (1, 2, 3))


def test_one_d_signals_shift_scale_noise_and_flip() -> None:
    x = torch.zeros(3, 1, 40)
    x[:, :, 18:22] = 1.0
    shifted = Augment(["shift"], 1, seed=0, shift=0.2)(x)
    centres = (shifted[:, 0] * torch.arange(40)).sum(1) / shifted[:, 0].sum(1)
    assert shifted.shape == x.shape and (centres - 19.5).abs().max() > 0.5
    assert torch.allclose(shifted.sum((1, 2)), x.sum((1, 2)), atol=0.5)  # moved, not lost
    zoomed = Augment(["scale"], 1, seed=0, scale=0.4)(x)
    assert not torch.allclose(zoomed.sum((1, 2)), x.sum((1, 2)))
    assert torch.equal(Augment(["flip"], 1, flip=1.0)(x), x.flip(2))
    noisy = Augment(["noise"], 1, seed=0, noise=0.1)(x)
    assert 0.05 < (noisy - x).std() < 0.2
    warped, m = Augment(["elastic"], 1, seed=0, elastic=0.05)(x, (x[:, 0] > 0).long())
    assert torch.equal((warped[:, 0] > 0.5).long().sum(1) > 0, m.sum(1) > 0)


def test_bad_ops_and_parameters_raise_one_line_errors() -> None:
    with pytest.raises(DltricksError, match="unknown op 'flipp'.*did you mean flip"):
        Augment(["flipp"], 2)
    with pytest.raises(DltricksError, match="rotate needs 2D or 3D"):
        Augment(["rotate"], 1)
    with pytest.raises(DltricksError, match="unknown parameter"):
        Augment(["flip"], 2, flop=1)
    with pytest.raises(DltricksError, match="spatial dims"):
        Augment(["flip"], 2)(torch.zeros(2, 1, 8))
    with pytest.raises(DltricksError, match="mask shape"):
        Augment(["flip"], 2)(torch.zeros(2, 1, 8, 8), torch.zeros(2, 7, 8))


def test_from_spec_builds_the_recipe_transform() -> None:
    assert from_spec(AugmentSpec(), 2, "segmentation") is None
    spec = AugmentSpec(flip=1.0, noise=0.1)
    x, y = torch.rand(4, 1, 16, 16), torch.randint(0, 3, (4, 16, 16))
    seg = from_spec(spec, 2, "segmentation", seed=0)
    xo, yo = seg(x, y)
    assert torch.equal(yo, y.flip(1).flip(2))  # flipped on both axes, like the image
    assert (xo - x.flip(2).flip(3)).abs().mean() > 0.01  # noise on the image only
    labels = torch.tensor([0, 1, 2, 1])
    xo, lo = from_spec(spec, 2, "classification", seed=0)(x, labels)
    assert torch.equal(lo, labels)
    with pytest.raises(DltricksError, match="data.augment.rotate90 needs 2D or 3D"):
        from_spec(AugmentSpec(rotate90=0.5), 1, "classification")


def test_every_op_is_a_catalogue_trick() -> None:
    from dltricks.tricks import catalogue

    tricks = catalogue()
    for op in GEOMETRIC + INTENSITY:
        t = tricks[f"augment_{op}"]
        assert t.on[f"data.augment.{op}"] > 0 and t.off[f"data.augment.{op}"] == 0
        AugmentSpec(**{op: t.on[f"data.augment.{op}"]})  # the "on" value is valid


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_tensors_match_cpu_for_geometric_ops() -> None:
    mask = _masks(3, n=2)
    image = mask.float().unsqueeze(1)
    ops = ["flip", "rotate90", "rotate", "scale", "elastic"]
    cpu = Augment(ops, 3, seed=4)(image, mask)
    gpu = Augment(ops, 3, seed=4)(image.cuda(), mask.cuda())
    assert gpu[0].is_cuda and gpu[1].is_cuda
    assert torch.allclose(gpu[0].cpu(), cpu[0], atol=1e-4)
    assert (gpu[1].cpu() != cpu[1]).float().mean() < 1e-3  # nearest may flip a tie
    noisy = Augment(["noise"], 3, seed=0)(image.cuda())
    assert noisy.is_cuda
