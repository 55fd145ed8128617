"""``dltricks train``: one recipe, one recorded run.

Rerunning an interrupted ``dltricks train RECIPE`` resumes it: when the ledger holds an interrupted run of
the same resolved recipe (seed included) outside any study, that run continues from its checkpoint, as a
study's cells do on a rerun of ``dltricks ablate``, and one line says so. ``--fresh`` starts a new run
instead; ``--resume RUN_ID`` or ``--resume last`` names the run to continue.

``--nproc N`` trains the one run on N processes (PyTorch DDP arithmetic, see :mod:`dltricks.loop.distributed`):
this process becomes torchrun's agent (``torch.distributed.launcher``, as ``torchrun --standalone``) and starts
the same command without ``--nproc`` on N ranks, which find torchrun's environment; so does ``torchrun ... -m
dltricks.cli train RECIPE`` written by hand (on several machines, say).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from dltricks.cli.common import Parents, command, err, ledger_of, out, page, positive, recipe_args, recipe_of
from dltricks.errors import DltricksError

if TYPE_CHECKING:
    from dltricks.ledger import Ledger
    from dltricks.ledger.record import RunRecord
    from dltricks.recipe import Recipe

RERUN = """\
Rerunning an interrupted `dltricks train RECIPE` resumes it: the newest interrupted run of the
same resolved recipe and seed (outside any study) continues from its checkpoint, and a line says
so; --fresh starts a new run instead."""


def add_parsers(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = page(sub, "train", parents.common, "train a recipe and record the run",
             "dltricks train mnist1d-cnn\ndltricks train my.toml -o train.epochs=5 -o train.lr=3e-3\n"
             "dltricks train my.toml           (again, after Ctrl-C: resumes the interrupted run)\n"
             "dltricks train my.toml --fresh   (a new run, the interrupted one left as it is)\n"
             "dltricks train --resume 3f2a9c   (continues that run where it stopped)\n"
             "dltricks train --resume last     (continues the newest interrupted run)\n"
             "dltricks train my.toml --nproc 4 (one run on 4 processes: one GPU each, or CPU cores with gloo)")
    p.description = f"train a recipe and record the run\n\n{RERUN}"
    recipe_args(p, required=False)
    p.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted run from its checkpoint: a run id, "
                                                      "or 'last' (the newest interrupted run outside any study)")
    p.add_argument("--fresh", action="store_true",
                   help="start a new run even where an interrupted run of the same recipe and seed could resume")
    p.add_argument("--keep-checkpoint", action="store_true",
                   help="keep the resume checkpoint (optimiser and RNG state) of a completed run; by default "
                        "only its weights stay")
    p.add_argument("--nproc", type=positive, metavar="N",
                   help="train the one run on N processes (torchrun, DistributedDataParallel's arithmetic): one "
                        "CUDA device each, or CPU cores; train.batch_size stays the whole batch")
    p.add_argument("--backend", choices=["gloo", "nccl"],
                   help="the process group's backend with --nproc (default: nccl on CUDA, gloo on CPU)")


@command
def cmd_train(args: argparse.Namespace) -> int:
    if not args.recipe and not args.resume:
        raise DltricksError("train needs a RECIPE (a bundled name or a .toml path) or --resume RUN_ID")
    if args.resume and (args.recipe or args.override):
        raise DltricksError("--resume continues a run with its own recipe; give no RECIPE or -o with it")
    if args.resume and args.fresh:
        raise DltricksError("--fresh starts a new run and --resume continues one: give one of them")
    recipe = recipe_of(args) if args.recipe else ""  # a bad recipe fails here, before torch loads
    from dltricks.loop import distributed

    if args.nproc and args.nproc > 1 and not distributed.launched():
        return _spawn(args, recipe.train.device if recipe else "auto")
    if args.backend:
        os.environ["DLTRICKS_BACKEND"] = distributed.check_backend(args.backend)
    d = distributed.setup(recipe.train.device if recipe else "auto")
    finished = False
    try:
        code = _train(args, recipe, d)
        finished = True
        return code
    finally:
        distributed.teardown(finished)


def _spawn(args: argparse.Namespace, device: str) -> int:
    """``--nproc N``: this command again on N ranks under torchrun (torch.distributed.run); its exit status."""
    from dltricks.loop import distributed

    have, what = distributed.devices_available(device)
    if args.nproc > have:
        raise DltricksError(f"--nproc {args.nproc}: this machine has {have} {what}; give --nproc {have} or fewer")
    env = dict(os.environ)
    if args.backend:
        env["DLTRICKS_BACKEND"] = distributed.check_backend(args.backend)
    again = [args.recipe] if args.recipe else []
    for o in args.override or []:
        again += ["-o", o]
    for flag, value in (("--resume", args.resume), ("--ledger", args.ledger)):
        if value:
            again += [flag, value]
    again += [f for f, on in (("--fresh", args.fresh), ("--keep-checkpoint", args.keep_checkpoint),
                              ("--quiet", args.quiet), ("--debug", args.debug)) if on]
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dltricks-ranks-") as tmp:
        env["DLTRICKS_RUN_FILE"] = os.path.join(tmp, "run")  # rank 0 writes the id of the run it records
        code, died = _elastic(args.nproc, [sys.executable, "-m", "dltricks.cli", "train", *again], env)
        if died:
            _rank_died(args, env["DLTRICKS_RUN_FILE"], died)
    return code


def _rank_died(args: argparse.Namespace, run_file: str, reason: str) -> None:
    """A rank died (killed, out of memory) and torchrun stopped the others: the run is marked failed with the
    reason unless rank 0 recorded its own, and one line says so."""
    from dltricks.ledger import Ledger

    try:
        with open(run_file) as f:
            run_id = f.read().strip()
    except OSError:
        run_id = ""
    if not run_id:
        err.print(f"error: {reason}, before the run was recorded", markup=False, soft_wrap=True)
        return
    ledger = Ledger(url=args.ledger)
    if ledger.get(run_id).status == "running":
        ledger.finish(run_id, "failed", failure=reason)
        err.print(f"error: run {run_id} failed: {reason}", markup=False, soft_wrap=True)


def _elastic(nproc: int, cmd: list[str], env: dict[str, str]) -> tuple[int, str]:
    """``cmd`` on ``nproc`` ranks of one machine, as ``torchrun --standalone`` runs it, with this process as
    torchrun's agent: a failed rank or a Ctrl-C becomes an exit status here, not torchrun's traceback (the
    ranks print their own line). On Ctrl-C the agent passes the signal to the ranks, which stop at the same
    step and save, and waits for them. Returns the exit status and, where a rank was killed by a signal,
    the reason ("rank 1 was killed by signal 9")."""
    import logging
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in [n for n in logging.root.manager.loggerDict if n.startswith("torch.distributed")]:
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the agent's notes ("shutting down workers"): ours instead
    from dltricks import cores

    # torchrun's own default: ranks share the cores, rather than each starting a thread per core
    env.setdefault("OMP_NUM_THREADS", str(max(1, cores.free_cores() // nproc)))
    os.environ.update(env)  # the agent starts the ranks with this process's environment
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.2)
    try:
        elastic_launch(config, cmd[0])(*cmd[1:])
    except SignalException:
        return 130, ""
    except ChildFailedError as e:
        first = min(e.failures.values(), key=lambda f: f.timestamp)  # the cause; the others were stopped
        if first.exitcode < 0:  # a signal, not a rank's own error (which it has printed and recorded)
            return 1, f"rank {first.local_rank} of {nproc} was killed by signal {-first.exitcode}"
        codes = [f.exitcode for f in e.failures.values()]
        return next((c for c in codes if c in (1, 2, 130)), 1), ""
    return 0, ""


def _train(args: argparse.Namespace, recipe: Recipe | str, d) -> int:
    from dltricks.loop import distributed
    from dltricks.loop.training import TrainingInterrupted
    from dltricks.runner.run import train

    if d is not None and not d.main:
        distributed.barrier(d)  # rank 0 opens (and may create) the ledger first
    ledger = ledger_of(args)
    if d is not None and d.main:
        distributed.barrier(d)
    resume = args.resume
    if d is None or d.main:  # one rank decides which run continues; the others are told
        if resume == "last":
            resume = _last_interrupted(ledger).id
        elif recipe and not args.fresh:
            stopped = _interrupted_run_of(ledger, recipe)
            if stopped is not None:
                resume = stopped.id
                err.print(f"resuming run {stopped.id}, interrupted earlier with the same recipe and seed "
                          f"(--fresh starts a new run)", markup=False, soft_wrap=True)
    resume = distributed.broadcast(resume, d)
    try:
        result = train("" if resume else recipe, ledger=ledger, progress=not args.quiet, resume=resume,
                       keep_checkpoint=args.keep_checkpoint)
    except distributed.PeerLost:
        if d is not None and not d.main:
            return 1  # rank 0, or the agent, says that a rank died
        raise
    except TrainingInterrupted as e:
        if d is not None and not d.main:
            return 130  # rank 0 says where the run stopped
        run_id = getattr(e, "run_id", "?")
        where = f" {e.where}" if getattr(e, "where", "") else ""
        again = "the same command (it resumes the run), or " if args.recipe else ""
        err.print(f"interrupted{where}: run {run_id} saved; continue with: {again}dltricks train --resume {run_id}",
                  markup=False, soft_wrap=True)
        return 130
    if d is not None and not d.main:
        return 0  # rank 0 prints the run
    m = result.metrics
    shown = {k: v for k, v in m.items() if k.startswith("test_")}
    out.print(f"run [bold]{result.run_id}[/] completed: " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items()),
              soft_wrap=True)
    out.print(f"weights: {result.run_dir / 'model.safetensors'}", markup=False, soft_wrap=True)
    return 0


def _interrupted_run_of(ledger: Ledger, recipe: Recipe) -> RunRecord | None:
    """The newest interrupted run of ``recipe`` as resolved (its seed included) that no study owns, or None.
    A study's cells resume through their study (a rerun of ``dltricks ablate``), never here."""
    for rec in ledger.runs(status="interrupted", name=recipe.name):
        if rec.study is not None:
            continue
        try:
            same = type(recipe).from_dict(rec.recipe, source=f"run {rec.id}").digest() == recipe.digest()
        except DltricksError:  # recorded by an older schema that no longer validates: not this recipe
            same = False
        if same:
            return rec
    return None


def _last_interrupted(ledger: Ledger) -> RunRecord:
    """``--resume last``: the newest interrupted run that no study owns."""
    for rec in ledger.runs(status="interrupted"):
        if rec.study is None:
            return rec
    raise DltricksError(f"--resume last: no interrupted run to resume in {ledger.where} "
                        "(dltricks runs --status interrupted lists the runs that stopped)")
