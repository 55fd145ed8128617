"""Command cells: any training script as a study's cell (``dltricks ablate --command``, ``tune --command``).

A command study stores a :data:`CommandSpec` (a JSON dict) with its definition:

    {"line": "python train.py --epochs 20 --lr {lr=0.1} --seed {seed}",  # the command as given
     "cwd": "/abs/dir", "env": {"OMP_NUM_THREADS": "1"}, "timeout": 600.0 or None}

and each variant's patch is what its tricks add: ``{"args": [...], "env": {...}, "set": {"lr": "1e-5"}}``.
A cell's command line is the line split as a shell would (no shell runs it), each ``{name}`` placeholder
filled (``{seed}``, ``{cell}``, ``{variant}``, ``{study}``, a trick's ``set``, else the default written
after ``=``), then the tricks' arguments appended. It runs in ``cwd`` in a process group of its own with
``DLTRICKS_SEED``, ``DLTRICKS_CELL`` and ``DLTRICKS_METRICS`` set; its metrics are the JSON object at
``$DLTRICKS_METRICS`` or, failing that, the last line of its standard output.

This module renders and checks commands and parses metrics; running one is
:mod:`dltricks.search.command_process`'s, recording cells :mod:`dltricks.search.command_job`'s. No torch.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dltricks.errors import DltricksError

CommandSpec = dict[str, Any]
PLACEHOLDER = re.compile(r"\{(\w+)(?:=([^{}]*))?\}")
BUILTIN = ("seed", "cell", "variant", "study")


# ---- tricks -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CommandTrick:
    """A trick of a command study: arguments appended, environment variables and placeholder values set
    while it is on (and nothing while it is off)."""

    name: str
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict, hash=False)
    set: dict[str, str] = field(default_factory=dict, hash=False)

    def patch(self) -> dict[str, Any]:
        return {"args": list(self.args), "env": dict(self.env), "set": dict(self.set)}


def parse_trick(text: str) -> CommandTrick:
    """``NAME:ARGS`` from the command line: ARGS are appended to the command when the trick is on; a word
    ``{key}=VALUE`` fills placeholder ``{key}`` instead, and ``$VAR=VALUE`` sets an environment variable."""
    name, colon, body = text.partition(":")
    if not colon or not name.strip():
        raise DltricksError(f"--trick {text!r}: with --command a trick is NAME:ARGS, the arguments its variant "
                            "adds, e.g. --trick 'ls:--label-smoothing 0.1' (or '{lr}=1e-5', '$AMP=1')")
    try:
        words = shlex.split(body)
    except ValueError as e:
        raise DltricksError(f"--trick {text!r}: cannot split its arguments ({e})") from None
    args, env, values = [], {}, {}
    for w in words:
        m = re.fullmatch(r"\{(\w+)\}=(.*)", w, re.S)
        if m:
            values[m.group(1)] = m.group(2)
        elif re.fullmatch(r"\$[A-Za-z_]\w*=.*", w, re.S):
            key, _, value = w[1:].partition("=")
            env[key] = value
        else:
            args.append(w)
    return make_trick(name.strip(), args, env, values, where=f"--trick {text!r}")


def trick_from_table(name: str, table: Any, where: str) -> CommandTrick:
    """A trick of a study file: ``[ablate.tricks.NAME]`` with ``args`` (a list or one string), ``env`` and
    ``set`` tables; or just an argument list or string."""
    if isinstance(table, str | list):
        table = {"args": table}
    if not isinstance(table, dict):
        raise DltricksError(f"{where}: a trick is a table with args, env and/or set, got {table!r}")
    unknown = sorted(set(table) - {"args", "env", "set"})
    if unknown:
        raise DltricksError(f"{where}: unknown key {unknown[0]!r}; a trick has args, env and set")
    args = table.get("args", [])
    if isinstance(args, str):
        args = shlex.split(args)
    if not isinstance(args, list) or not all(isinstance(a, str | int | float) for a in args):
        raise DltricksError(f"{where}.args: a list of arguments or one string, got {args!r}")
    for key in ("env", "set"):
        if not isinstance(table.get(key, {}), dict):
            raise DltricksError(f"{where}.{key}: a table of NAME = value, got {table[key]!r}")
    return make_trick(name, [str(a) for a in args], table.get("env", {}), table.get("set", {}), where=where)


def make_trick(name: str, args: list[str], env: dict[str, Any], values: dict[str, Any], *, where: str
               ) -> CommandTrick:
    if not re.fullmatch(r"[\w.+-]+", name):
        raise DltricksError(f"{where}: trick name {name!r} may hold letters, digits, '_', '-', '.' and '+' only")
    if not (args or env or values):
        raise DltricksError(f"{where}: trick {name} has empty arguments; give what its variant adds, "
                            f"e.g. '{name}:--flag value'")
    return CommandTrick(name, tuple(args), {str(k): str(v) for k, v in env.items()},
                        {str(k): str(v) for k, v in values.items()})


def combine(tricks: list[CommandTrick], on: tuple[str, ...]) -> dict[str, Any]:
    """The patch of a variant with tricks ``on``: their arguments in the order of the study's tricks; a later
    trick's env and placeholder values win."""
    patch: dict[str, Any] = {"args": [], "env": {}, "set": {}}
    for t in tricks:
        if t.name in on:
            patch["args"] += list(t.args)
            patch["env"].update(t.env)
            patch["set"].update(t.set)
    return patch


# ---- one cell's command -----------------------------------------------------------------------------

def split_line(line: str) -> list[str]:
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise DltricksError(f"--command {line!r}: cannot split it as a shell would ({e})") from None
    if not words:
        raise DltricksError("--command is empty: give the command that trains, e.g. "
                            "--command 'python train.py --seed {seed}'")
    return words


def _fill(word: str, values: dict[str, str], where: str) -> str:
    def one(m: re.Match) -> str:
        key, default = m.group(1), m.group(2)
        if key in values:
            return values[key]
        if default is not None:
            return default
        raise DltricksError(f"placeholder {{{key}}} in {where} is filled by no trick, seed or search dimension; "
                            f"give it a default ({{{key}=VALUE}}), set it in a trick ('{{{key}}}=VALUE') or search "
                            f"it (--space {key}=...); always filled: {', '.join('{' + b + '}' for b in BUILTIN)}")
    return PLACEHOLDER.sub(one, word)


def render(spec: CommandSpec, patch: dict[str, Any], *, seed: int, cell: str, variant: str, study: str
           ) -> tuple[list[str], dict[str, str]]:
    """(argv, environment variables to add) of one cell; a placeholder left unfilled raises."""
    values = {"seed": str(seed), "cell": cell, "variant": variant, "study": study,
              **{k: str(v) for k, v in patch.get("set", {}).items()}}
    argv = [_fill(w, values, f"the command of {variant}") for w in split_line(spec["line"])]
    argv += [_fill(w, values, f"the arguments of {variant}") for w in patch.get("args", [])]
    env = {**spec.get("env", {}), **patch.get("env", {})}
    env = {k: _fill(str(v), values, f"the environment of {variant}") for k, v in env.items()}
    return argv, env


def placeholders(line: str) -> set[str]:
    return {m.group(1) for m in PLACEHOLDER.finditer(line)}


def check_found(argv0: str, cwd: str, env: dict[str, str]) -> None:
    """Fail before anything runs when the program is not there."""
    if "/" in argv0:
        path = Path(cwd) / argv0
        if not path.is_file():
            raise DltricksError(f"command {argv0!r} not found: no such file in {cwd}")
        if not os.access(path, os.X_OK):
            raise DltricksError(f"command {argv0!r} is not executable (chmod +x it, or run it through its "
                                "interpreter: 'python script.py', 'sh script.sh')")
        return
    if shutil.which(argv0, path=env.get("PATH", os.environ.get("PATH"))) is None:
        raise DltricksError(f"command {argv0!r} not found on PATH; give the program that trains, e.g. "
                            "'python train.py --seed {seed}' (a shell line needs: sh -c '...')")


def check(spec: CommandSpec, patches: dict[str, dict[str, Any]], study: str) -> None:
    """Fail before any cell runs on what can be known now: an unfilled placeholder in any variant, a
    program that is not found, a working directory that is not there."""
    if not Path(spec["cwd"]).is_dir():
        raise DltricksError(f"the study's working directory {spec['cwd']} does not exist")
    for variant, patch in patches.items():
        argv, env = render(spec, patch, seed=0, cell="v0s0", variant=variant, study=study)
        check_found(argv[0], spec["cwd"], {**os.environ, **env})


# ---- metrics ---------------------------------------------------------------------------------------

def parse_metrics(text: str, source: str) -> tuple[dict[str, float], dict[str, list[float]]]:
    """(metrics, curves) of one JSON object: numbers are metrics, lists of numbers curves (anything else is
    left out). Raises :class:`DltricksError` saying what is wrong."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DltricksError(f"the metrics in {source} are not valid JSON ({e.msg} at character {e.pos}): "
                            f"{text.strip()[:200]!r}") from None
    if not isinstance(obj, dict):
        raise DltricksError(f"the metrics in {source} must be a JSON object {{name: number}}, got "
                            f"{type(obj).__name__}: {text.strip()[:200]!r}")
    metrics, curves = {}, {}
    for k, v in obj.items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            metrics[str(k)] = float(v)
        elif isinstance(v, list) and v and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v):
            curves[str(k)] = [float(x) for x in v]
    return metrics, curves


def metric_failure(metrics: dict[str, float], metric: str) -> str | None:
    """Why ``metrics`` cannot score the cell on ``metric``: missing (named with those reported) or not finite."""
    if metric not in metrics:
        return (f"metric {metric} was not reported; the command reported: "
                f"{', '.join(sorted(metrics)) or 'no numbers'}")
    if not math.isfinite(metrics[metric]):
        return f"metric {metric} is {metrics[metric]} (not finite)"
    return None
