"""Doors out: ``dltricks export RUN --onnx FILE`` and ``dltricks runs export --tensorboard DIR | --mlflow URI``
(the latter's page is ``runs``; this module does the work)."""

from __future__ import annotations

import argparse

from dltricks.cli.common import Parents, command, ledger_of, out, page, print_line
from dltricks.errors import DltricksError


def add_parsers(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = page(sub, "export", parents.ledgered, "a run's model as ONNX, checked against PyTorch with onnxruntime "
                                              "on the run's test inputs",
             "dltricks export RUN_ID --onnx model.onnx\n"
             "dltricks runs export --tensorboard tb/      (every run's curves; then tensorboard --logdir tb/)\n"
             "dltricks runs export --mlflow file:///tmp/mlruns --study STUDY")
    p.add_argument("run_id", metavar="RUN_ID", help="a completed run (see `dltricks runs`)")
    p.add_argument("--onnx", metavar="FILE", required=True, help="the .onnx file to write")
    p.add_argument("--tolerance", type=float, default=None, metavar="ATOL",
                   help="largest |onnxruntime - torch| accepted on the test inputs (default 1e-4)")


def add_runs_export_args(p: argparse.ArgumentParser) -> None:
    """``dltricks runs export``'s options (the ``runs`` page holds them; :func:`runs_export` reads them)."""
    p.add_argument("--tensorboard", metavar="DIR", help="runs export: write TensorBoard event files under DIR")
    p.add_argument("--mlflow", metavar="URI", help="runs export: write MLflow runs to this tracking URI "
                                                  "(file:///path/mlruns, sqlite:///mlflow.db, http://host:5000)")


@command
def cmd_export(args: argparse.Namespace) -> int:
    from dltricks.ledger import Ledger

    missing = Ledger.missing(args.ledger)
    if missing is not None:
        raise DltricksError(f"no run {args.run_id!r}: there is no ledger at {missing} (see `dltricks runs`, or "
                            "name the ledger with --ledger URL)")
    from dltricks.runner.onnx_export import TOLERANCE, export_onnx  # torch: only once there is a ledger

    tol = TOLERANCE if args.tolerance is None else args.tolerance
    if not tol >= 0:
        raise DltricksError(f"--tolerance {args.tolerance} must be a number >= 0")
    r = export_onnx(ledger_of(args), args.run_id, args.onnx, tolerance=tol)
    print_line(f"onnx: {r.path}")
    out.print(f"checked with onnxruntime on {r.inputs} test inputs: max abs difference {r.max_abs_diff:.3g} "
              f"({'within' if r.ok else 'OVER'} the tolerance {r.tolerance:g})", markup=False, soft_wrap=True)
    return 0 if r.ok else 1


def _verdicts(ledger, studies: set[str]) -> dict[tuple[str, str], str]:
    """``{(study, variant): verdict}`` of the ablation studies among ``studies`` (others have none)."""
    from dltricks.ledger.study_report import StudyFacts, study_stats
    from dltricks.search import study as st

    found: dict[tuple[str, str], str] = {}
    for name in sorted(studies):
        try:
            optuna_study, d = st.load(ledger, name)
        except DltricksError:  # a tuning search or a compress study: no ablation verdicts
            continue
        r = st.results(optuna_study, d)
        facts = StudyFacts(d.to_json(), r.scores, r.metrics, r.run_ids, r.failures, done=len(r.done),
                           remaining=0, unchanged=st.unchanged_variants(d))
        found.update({(name, s.variant): s.verdict for s in study_stats(facts)})
    return found


def runs_export(args: argparse.Namespace) -> None:
    """``dltricks runs export``: the runs the filters select, to TensorBoard and/or MLflow."""
    if not (args.tensorboard or args.mlflow):
        raise DltricksError("runs export needs --tensorboard DIR and/or --mlflow URI (e.g. --tensorboard tb/)")
    from dltricks.ledger import Ledger

    missing = Ledger.missing(args.ledger)
    if missing is not None:  # reading an empty folder creates nothing in it
        raise DltricksError(f"no ledger at {missing}, so no runs to export (train one with: dltricks train RECIPE, "
                            "or name the ledger with --ledger URL)")
    ledger = ledger_of(args)
    records = [ledger.get(i) for i in args.ids] if args.ids else \
        ledger.runs(study=args.study, status=args.status, name=args.name, limit=args.limit)
    if not records:
        raise DltricksError(f"no runs to export in {ledger.where} (train one with: dltricks train RECIPE)")
    if args.tensorboard:
        from dltricks.ledger.export.tensorboard import export_runs

        folders = export_runs(records, args.tensorboard)
        print_line(f"tensorboard: {len(folders)} runs under {args.tensorboard} (tensorboard --logdir "
                   f"{args.tensorboard})")
    if args.mlflow:
        from dltricks.ledger.export import mlflow

        verdicts = _verdicts(ledger, {r.study for r in records if r.study})
        n = mlflow.export_runs(records, args.mlflow, verdicts=verdicts)
        print_line(f"mlflow: {n.written} runs written, {n.replaced} replaced, {n.unchanged} unchanged "
                   f"at {args.mlflow}")
