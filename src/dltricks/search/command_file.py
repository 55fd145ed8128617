"""Command studies from the command line or from a study file kept with the code:

    # study.toml (next to train.py; the commands run in this file's folder)
    [ablate]
    command = "python train.py --epochs 20 --seed {seed}"
    metric = "val_accuracy"
    mode = "add"                 # add | remove | factorial | cumulative
    seeds = "auto"               # or a number
    workers = 2
    cell_timeout = 600           # seconds
    env = { OMP_NUM_THREADS = "1" }

    [ablate.tricks]
    ls = ["--label-smoothing", "0.1"]                 # arguments added while the trick is on
    cosine = { args = "--schedule cosine", env = { WARMUP = "1" } }
    lowlr = { set = { lr = "1e-5" } }                 # fills {lr} in the command (default: {lr=0.01})

    [tune]
    command = "python train.py --lr {lr} --seed {seed}"
    metric = "val_accuracy"
    trials = 20
    sampler = "tpe"
    seeds_per_trial = 2
    pruner = "median"
    [tune.space]
    lr = { low = 1e-5, high = 0.1, log = true }
    optimizer = ["adam", "sgd"]

Options given on the command line win over the file's.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dltricks.errors import DltricksError, did_you_mean
from dltricks.search import command as cm
from dltricks.search.command_job import spec_of

ABLATE_KEYS = ("command", "metric", "mode", "seeds", "max_seeds", "workers", "cell_timeout", "env", "tricks",
               "study", "rope")
TUNE_KEYS = ("command", "metric", "trials", "sampler", "seeds_per_trial", "pruner", "search_seed", "workers",
             "cell_timeout", "env", "space", "study", "rerun_seeds")


def is_command_file(path: str | None, section: str) -> bool:
    """True when ``path`` is a TOML file whose ``[section]`` table has a ``command``."""
    if not path or not path.endswith(".toml") or not Path(path).is_file():
        return False
    try:
        table = tomllib.loads(Path(path).read_text()).get(section, {})
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False
    return isinstance(table, dict) and "command" in table


def read_section(path: str, section: str, keys: tuple[str, ...]) -> dict[str, Any]:
    try:
        table = tomllib.loads(Path(path).read_text()).get(section, {})
    except tomllib.TOMLDecodeError as e:
        raise DltricksError(f"{path} is not valid TOML: {e}") from None
    except OSError as e:
        raise DltricksError(f"cannot read {path}: {e.strerror or e}") from None
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise DltricksError(f"{path} [{section}]: unknown key {unknown[0]!r}{did_you_mean(unknown[0], keys)}; "
                            f"valid: {', '.join(keys)}")
    return table


@dataclass
class CommandSettings:
    """A command study as the user gave it: the stored spec, the tricks (ablate) or space (tune), and the
    rest of the section's settings (the command line's options win over them)."""

    spec: cm.CommandSpec
    tricks: list[cm.CommandTrick] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


def settings(section: str, *, file: str | None, command: str | None, tricks: list[str] | None,
             timeout: float | None) -> CommandSettings:
    """The command study of ``section`` ("ablate" or "tune") from a study file and/or the command line."""
    table: dict[str, Any] = {}
    cwd = None
    if file:
        table = read_section(file, section, ABLATE_KEYS if section == "ablate" else TUNE_KEYS)
        cwd = Path(file).resolve().parent  # a study versioned with the code runs beside it
    line = command or table.get("command")
    if not isinstance(line, str) or not line.strip():
        raise DltricksError(f"[{section}] command must be the command line that trains, e.g. "
                            "command = \"python train.py --seed {seed}\"")
    env = table.get("env", {})
    if not isinstance(env, dict):
        raise DltricksError(f"[{section}] env must be a table of NAME = \"value\", got {env!r}")
    if timeout is None and table.get("cell_timeout") is not None:
        timeout = float(table["cell_timeout"])
    spec = spec_of(line, cwd=cwd, env=env, timeout=timeout)
    out = CommandSettings(spec, settings={k: v for k, v in table.items() if k not in ("command", "env", "tricks")})
    if section == "ablate":
        if tricks:
            out.tricks = [cm.parse_trick(t) for t in tricks]
        else:
            found = table.get("tricks", {})
            if not isinstance(found, dict):
                raise DltricksError(f"[{section}] tricks must be a table of NAME = arguments, got {found!r}")
            out.tricks = [cm.trick_from_table(n, t, f"[ablate.tricks.{n}]") for n, t in found.items()]
        if not out.tricks:
            raise DltricksError("a command study needs at least one trick: --trick 'NAME:ARGS' (arguments its "
                                "variant adds), e.g. --trick 'ls:--label-smoothing 0.1', or [ablate.tricks]")
    return out
