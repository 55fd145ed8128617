"""A commented starter recipe for surveyed data (:class:`dltricks.data.survey.Survey`): what ``dltricks init``
writes.

The ``[data]`` section reads the data as surveyed, paths relative to the recipe's folder (as recipe files
resolve them). The model fits the input's shape: an MLP for tables, a 1D CNN for signals and sounds, a 2D CNN
for images, a 3D CNN for volumes, a U-Net for label maps. Training settings are small enough for a CPU; every
choice carries a comment that says why, and the survey's problems and the advisor's notes become comments.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from dltricks.data.survey_checks import Survey, balance

__all__ = ["model_section", "starter_recipe", "toml_value"]

DEFAULT_VAL = 0.1  # data.val_fraction's default
_SCHEDULES = {"one_cycle": "warm up, then anneal: forgiving of the lr", "cosine": "anneal the lr to 0 by the end"}


def toml_value(v: Any, here: Path) -> str:
    """One TOML value; a :class:`Path` is written relative to ``here`` (the recipe's folder) where it can be."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, Path):
        try:
            v = Path(os.path.relpath(v.resolve(), here.resolve())).as_posix()
        except ValueError:  # another drive: keep it absolute
            v = v.resolve().as_posix()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x, here) for x in v) + "]"
    return json.dumps(str(v))  # a TOML basic string


def model_section(s: Survey) -> tuple[dict[str, Any], dict[str, str], dict[str, Any], str]:
    """``[model]`` keys, their comments, ``[train]`` keys and a one-line reason for the choice."""
    dims = len(s.shape) - 1
    if s.task == "segmentation":
        return ({"name": "unet", "channels": [8, 16, 32], "norm": "group"},
                {"norm": "BatchNorm statistics of 2 samples are noise; GroupNorm does not use the batch"},
                {"epochs": 20, "batch_size": 2, "lr": 3e-3, "schedule": "one_cycle", "loss": "ce_dice",
                 "monitor": "val_dice"},
                f"label maps: a {dims}D U-Net (one class per {'voxel' if dims == 3 else 'pixel'})")
    if dims == 0:
        width = 64 if s.shape[0] <= 64 else 128
        train = {"epochs": 40, "batch_size": 32, "lr": 1e-3, "schedule": "cosine"}
        if s.task == "regression":
            train["normalize_targets"] = True
        return ({"name": "mlp", "hidden": [width, width], "dropout": 0.1}, {"hidden": "two hidden layers"},
                train, f"a table of {s.shape[0]} features: an MLP")
    if dims == 1:
        long = s.shape[-1] > 1000
        kernel = 9 if long else 5
        stages = 3
        # each stage halves the signal: add stages until the receptive field (about kernel x 2^stages) spans a
        # third of the input, as the advisor's receptive-field rule asks of a classifier
        while kernel * 2 ** stages < s.shape[-1] / 3 and stages < 7:
            stages += 1
        channels = [min(64, 16 * 2 ** i) for i in range(stages)]
        return ({"name": "cnn", "channels": channels, "kernel_size": kernel, "downsample": "max"},
                {"kernel_size": "a wider kernel on long signals: a larger receptive field for the same depth",
                 "channels": "width of each stage; each stage halves the signal"},
                {"epochs": 20, "batch_size": 32, "lr": 3e-3, "schedule": "one_cycle"},
                f"signals of length {s.shape[-1]}: a 1D CNN")
    if dims == 2:
        return ({"name": "cnn", "channels": [16, 32, 64], "kernel_size": 3, "norm": "batch"},
                {"channels": "width of each stage; each stage halves the image"},
                {"epochs": 15, "batch_size": 32, "lr": 3e-3, "schedule": "one_cycle"},
                f"{s.shape[1]}x{s.shape[2]} images: a 2D CNN")
    return ({"name": "cnn", "channels": [8, 16, 32], "norm": "group"},
            {"norm": "small batches of volumes: GroupNorm does not use the batch"},
            {"epochs": 20, "batch_size": 4, "lr": 3e-3, "schedule": "one_cycle"},
            f"volumes of {'x'.join(map(str, s.shape[1:]))}: a 3D CNN")


def _section(name: str, keys: dict[str, Any], notes: dict[str, str], here: Path) -> list[str]:
    lines = [f"[{name}]"]
    for k, v in keys.items():
        line = f"{k} = {toml_value(v, here)}"
        if k not in notes:
            lines.append(line)
        elif len(f"{line:<32} # {notes[k]}") <= 110:
            lines.append(f"{line:<32} # {notes[k]}")
        else:  # a long note goes above its key
            lines += _comment(notes[k]) + [line]
    return lines


def _comment(text: str) -> list[str]:
    """A comment, wrapped at 110 columns."""
    import textwrap

    return ["# " + line for line in textwrap.wrap(text, 108, subsequent_indent="  ")] or ["#"]


def starter_recipe(s: Survey, out: Path, advice: list[str] | None = None, command: str = "") -> str:
    """The recipe's text for the data surveyed in ``s``, to be written at ``out``; ``advice`` holds the
    advisor's notes (one line each) and ``command`` the one that wrote it."""
    here = out.parent
    model, model_notes, train, why = model_section(s)
    lines = _comment(f"Starter recipe for {s.path.name}, written by `{command or 'dltricks init'}`. Edit it freely: "
                     "`dltricks show` validates it, `dltricks advise` checks it, `dltricks train` runs it.")
    lines += _comment(f"The data: {s.what}; {s.task}; one input {'x'.join(map(str, s.shape))}.")
    if s.classes and s.task == "classification":
        lines += _comment(f"Classes: {len(s.classes)}, " + (balance(s.classes) or "one") + ".")
    for p in s.problems:
        lines += _comment(f"Problem: {p}")
    lines += _comment(f"The model: {why}.")
    name = out.stem
    lines += [f"name = {json.dumps(name)}", "seed = 0", ""]
    data, notes = dict(s.data), dict(s.notes)
    train_n = s.samples if s.test else int(s.samples * 0.8)
    if train_n and train_n * DEFAULT_VAL < 1.5:  # validation needs a sample or two: few cases, a larger share
        data["val_fraction"] = min(0.5, math.ceil(150 / train_n) / 100)
        notes["val_fraction"] = f"share of train held out for validation (of {train_n} samples: at least one)"
    lines += _section("data", data, notes, here) + [""]
    lines += _section("model", model, model_notes, here) + [""]
    lines += _section("train", train, {"schedule": _SCHEDULES.get(train.get("schedule"), "")}, here)
    if s.task == "segmentation":
        lines += ["", "[eval]", 'metric = "test_dice"']
    elif s.task == "regression":  # one target: its metrics carry no name
        lines += ["", "[eval]", 'metric = "test_mae"  # mean absolute error: lower is better']
    if advice is not None:
        lines += ["", "# ---- the advisor's notes (`dltricks advise` on this recipe; `--fix` applies them) ----"]
        for a in advice or ["none: the advisor finds nothing to change."]:
            lines += _comment(a)
    return "\n".join(lines) + "\n"
