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

This module runs processes and reads their output; recording cells belongs to
:mod:`dltricks.search.command_job`. It imports no torch.
"""

from __future__ import annotations

import json
import math
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dltricks.errors import DltricksError

CommandSpec = dict[str, Any]
PLACEHOLDER = re.compile(r"\{(\w+)(?:=([^{}]*))?\}")
BUILTIN = ("seed", "cell", "variant", "study")
TAIL_LINES = 20
GRACE_S = 3.0  # how long a stopped cell's process group has to exit before SIGKILL


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


# ---- running it -------------------------------------------------------------------------------------

@dataclass
class Outcome:
    """What a cell's process did: exit code (None when it was stopped), wall time, timed out or not, the
    last lines of its output and the metrics it reported (or why they could not be read)."""

    exit_code: int | None
    wall_s: float
    timed_out: bool
    stdout_tail: list[str]
    stderr_tail: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    failure: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "wall_s": self.wall_s, "timed_out": self.timed_out,
                "stdout_tail": self.stdout_tail, "stderr_tail": self.stderr_tail, "failure": self.failure}


_PRCTL: list[Any] = []  # libc's prctl, looked up here: the child between fork and exec must not load anything


def _death_signal() -> Callable[[], None] | None:
    """What the cell's child runs before exec: if its worker is killed (kill -9), the kernel ends the cell's
    process too, so no orphan keeps training. None off Linux."""
    if not _PRCTL:
        try:
            import ctypes

            _PRCTL.append(ctypes.CDLL(None, use_errno=True).prctl)
        except (OSError, AttributeError):
            _PRCTL.append(None)
    prctl = _PRCTL[0]
    if prctl is None or not sys.platform.startswith("linux"):
        return None
    return lambda: prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@contextmanager
def shielded() -> Iterator[None]:
    """Ctrl-C and SIGTERM held off while a stopped cell's process group is being ended: a second Ctrl-C must
    not cut the clean-up short and leave the group running (main thread only; elsewhere a no-op)."""
    try:
        before = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def tail(path: Path, n: int = TAIL_LINES) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-n:]


def stop_group(proc: subprocess.Popen, sig: int, grace: float = GRACE_S) -> None:
    """Send ``sig`` to the cell's whole process group, then SIGKILL whatever is left after ``grace``."""
    for s, wait in ((sig, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, s)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(wait)
            # the leader is gone; children it left in the group get the same signal
            os.killpg(proc.pid, signal.SIGKILL)
        except subprocess.TimeoutExpired:
            continue
        except (ProcessLookupError, PermissionError):
            pass
        return


def _wait(proc: subprocess.Popen, pidfd: int | None, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``proc`` to exit; True once it has."""
    if pidfd is not None:
        select.select([pidfd], [], [], max(0.0, seconds))
        return proc.poll() is not None
    try:
        proc.wait(max(0.0, seconds))
        return True
    except subprocess.TimeoutExpired:
        return False


def run_process(argv: list[str], *, cwd: str, env: dict[str, str], folder: Path, timeout: float | None,
                on_tick: Callable[[], str | None] | None = None, tick_s: float = 0.5) -> Outcome:
    """Run one cell's command, output to ``folder``/stdout.log and stderr.log, metrics read from
    ``folder``/metrics.json (``$DLTRICKS_METRICS``) or the last line of standard output.

    ``on_tick`` is called every ``tick_s`` while it runs; a reason it returns stops the cell (a pruner).
    Ctrl-C (or SIGTERM turned into KeyboardInterrupt) stops the whole group and re-raises."""
    folder.mkdir(parents=True, exist_ok=True)
    out_path, err_path, metrics_path = folder / "stdout.log", folder / "stderr.log", folder / "metrics.json"
    metrics_path.unlink(missing_ok=True)
    env = {**os.environ, **env, "DLTRICKS_METRICS": str(metrics_path)}
    env.pop("DLTRICKS_NO_PROGRESS", None)
    started = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True, preexec_fn=_death_signal())
        except OSError as e:
            return Outcome(None, 0.0, False, [], [], failure=f"could not start {argv[0]!r}: {e.strerror or e}")
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pidfd = None
    timed_out, stopped = False, None
    try:
        while True:
            left = None if timeout is None else timeout - (time.monotonic() - started)
            step = tick_s if on_tick is not None else (left if left is not None else 3600.0)
            if _wait(proc, pidfd, step if left is None else min(step, left)):
                break
            if left is not None and time.monotonic() - started >= timeout:
                timed_out = True
                stop_group(proc, signal.SIGTERM)
                break
            if on_tick is not None:
                stopped = on_tick()
                if stopped:
                    stop_group(proc, signal.SIGTERM)
                    break
    except BaseException:
        with shielded():
            stop_group(proc, signal.SIGINT)  # as a Ctrl-C in its terminal would: it may save, then it ends
        raise
    finally:
        if pidfd is not None:
            os.close(pidfd)
    wall = time.monotonic() - started
    o = Outcome(None if (timed_out or stopped) else proc.returncode, wall, timed_out, tail(out_path), tail(err_path))
    if stopped:
        o.failure = stopped
        read_metrics(o, metrics_path, out_path, partial=True)
    elif timed_out:
        o.failure = f"timed out after {timeout:g} s (--cell-timeout){_last_lines(o.stderr_tail or o.stdout_tail)}"
    elif proc.returncode != 0:
        how = (f"was killed by signal {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
               else f"exited with code {proc.returncode}")
        o.failure = f"the command {how}{_last_lines(o.stderr_tail or o.stdout_tail, 'standard error')}"
    else:
        read_metrics(o, metrics_path, out_path)
    return o


def _last_lines(lines: list[str], what: str = "output", n: int = 5) -> str:
    return f"; last lines of its {what}: " + " | ".join(lines[-n:]) if lines else ""


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


def read_metrics(o: Outcome, metrics_path: Path, out_path: Path, *, partial: bool = False) -> None:
    """Fill ``o.metrics`` and ``o.curves`` from the metrics file or the last line of standard output, or set
    ``o.failure`` saying which of: no metrics, unparsable JSON, a metric that is NaN or infinite."""
    try:
        text = metrics_path.read_text() if metrics_path.is_file() else ""
        source = "$DLTRICKS_METRICS"
        if not text.strip():
            text, source = (o.stdout_tail[-1] if o.stdout_tail else ""), "the last line of standard output"
        if not text.strip():
            raise DltricksError("the command printed no metrics: write a JSON object to $DLTRICKS_METRICS "
                                "(dltricks.report_metrics does) or print one as its last line of output")
        o.metrics, o.curves = parse_metrics(text, source)
    except DltricksError as e:
        if not partial:
            o.failure = str(e)


def metric_failure(metrics: dict[str, float], metric: str) -> str | None:
    """Why ``metrics`` cannot score the cell on ``metric``: missing (named with those reported) or not finite."""
    if metric not in metrics:
        return (f"metric {metric} was not reported; the command reported: "
                f"{', '.join(sorted(metrics)) or 'no numbers'}")
    if not math.isfinite(metrics[metric]):
        return f"metric {metric} is {metrics[metric]} (not finite)"
    return None


def describe(spec: CommandSpec) -> str:
    return f"{spec['line']}  (in {spec['cwd']})"
