"""``data.name = "images"``: the user's images, one sub-folder per class (or a CSV of ``path,label``).

PNG, JPEG, BMP and TIFF files are read with Pillow, converted to ``data.channels`` (1 = grey, 3 = RGB; a
folder may mix modes), resized to ``data.size`` by the ``data.resize`` policy, and scaled to [0, 1]. The
result is (N, C, H, W) float32, so every 2D model and the 2D augmentations apply. Files are decoded once into
a memory-mapped cache (:mod:`dltricks.data.cache`) that every epoch and every run of an ablation shares;
the split is :mod:`dltricks.data.folders`'.

A file Pillow cannot read (corrupt, truncated, not an image) is one line naming it; ``data.skip_corrupt``
leaves such files out and says how many.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pydantic
from pydantic import Field

from dltricks.data.bundle import DataBundle
from dltricks.data.cache import Unreadable
from dltricks.data.folders import bundle_from_files, class_files
from dltricks.data.registry import register_dataset
from dltricks.recipe import PATH, DataSpec

__all__ = ["ImagesSpec", "IMAGE_EXTS", "decode_image", "load_images"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class ImagesSpec(DataSpec):
    name: str = "images"
    root: str = Field(min_length=1, description="a folder with one sub-folder of images per class (its name is "
                                                "the class), or a CSV with columns path,label",
                      json_schema_extra=PATH)
    test_root: str = Field("", description="a folder (or CSV) like root to test on; '' = hold out test_fraction",
                           json_schema_extra=PATH)
    size: int | list[int] = Field(32, description="the side of the square images fed to the model, or "
                                                  "[height, width]; every file is resized to it (see resize)")
    resize: Literal["crop", "pad", "stretch"] = Field(
        "crop", description="aspect-ratio policy of the resize: crop = scale the image to cover size and cut the "
                            "overhang of the longer side equally at both ends (nothing is distorted, edges may "
                            "be lost); pad = scale it to fit inside and fill the rest with black; stretch = "
                            "scale each side on its own (distorts)")
    channels: Literal[1, 3] = Field(3, description="1 = grey, 3 = RGB; files of other modes are converted")
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="held out as test (stratified) without "
                                                                  "test_root")
    split_seed: int = Field(0, ge=0, description="fixes the test and validation splits across runs")
    skip_corrupt: bool = Field(False, description="leave out files that cannot be read (and say how many) "
                                                  "instead of stopping at the first")

    @pydantic.field_validator("size")
    @classmethod
    def _size(cls, v: int | list[int]) -> int | list[int]:
        sides = [v] if isinstance(v, int) else v
        if len(sides) not in (1, 2) or any(s < 1 or s > 4096 for s in sides):
            raise ValueError("must be a side in 1..4096 or [height, width]")
        return v

    @property
    def hw(self) -> tuple[int, int]:
        s = self.size
        return (s, s) if isinstance(s, int) else (s[0], s[-1])


def decode_image(path: str, height: int, width: int, channels: int, resize: str) -> np.ndarray:
    """One file -> (channels, height, width) float32 in [0, 1]; :class:`Unreadable` says why it cannot."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im.load()  # decodes now, so a truncated file fails here, not later
            if im.mode in ("I;16", "I;16B", "I;16L", "I") and channels == 1:
                # 16-bit grey (medical, microscopy): keep the depth instead of clipping at 255
                a = np.asarray(im, dtype=np.float32) / 65535.0
                im = Image.fromarray(np.clip(a * 255.0, 0, 255).astype(np.uint8), "L")
            im = im.convert("L" if channels == 1 else "RGB")
            if resize == "crop":
                im = ImageOps.fit(im, (width, height), Image.Resampling.BILINEAR)
            elif resize == "pad":
                im = ImageOps.pad(im, (width, height), Image.Resampling.BILINEAR, color=0)
            else:
                im = im.resize((width, height), Image.Resampling.BILINEAR)
            a = np.asarray(im, dtype=np.float32) / 255.0
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise Unreadable(f"not a readable image ({type(e).__name__}: {str(e)[:100]})") from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


@register_dataset("images", ImagesSpec)
def load_images(spec: ImagesSpec, seed: int) -> DataBundle:
    files, labels = class_files(spec.root, "data.root", IMAGE_EXTS, "image")
    test = class_files(spec.test_root, "data.test_root", IMAGE_EXTS, "image") if spec.test_root else None
    h, w = spec.hw
    settings = {"height": h, "width": w, "channels": spec.channels, "resize": spec.resize}
    return bundle_from_files(spec, files, labels, test, (spec.channels, h, w), decode_image, settings,
                             f"data.root = {str(Path(spec.root))!r}")
