"""Studies of any training script (`dltricks ablate --command`, `dltricks tune --command`), run through the
command line on real scripts: a PyTorch script whose far-too-low learning rate must come out `hurts`, shell
scripts that print JSON, a script that crashes on one seed, one that hangs past --cell-timeout, kill -9 of
a 2-worker study and its rerun, and the bad input that must be refused before anything runs."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from dltricks.ledger import Ledger

CLI = [sys.executable, "-m", "dltricks.cli"]


def run_cli(args: list[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess:
    env = {**os.environ, "DLTRICKS_HOME": str(cwd / "runs"), "DLTRICKS_NO_PROGRESS": "1", **(env or {})}
    env.pop("DLTRICKS_LEDGER", None)
    quiet = [] if args[0] == "report" else ["--quiet"]
    return subprocess.run([*CLI, *args, *quiet], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def script(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    path.chmod(0o755)
    return path


def trials_of(cwd: Path, study: str) -> list:
    ledger = Ledger(root=cwd / "runs")
    return optuna.load_study(study_name=study, storage=ledger.url).get_trials(deepcopy=False)


# A shell script (any language will do): its accuracy is 0.5 + seed/100, or 0.8 + seed/100 with --good;
# a curve under "val_acc" is plotted in the report.
SHELL = """
#!/bin/sh
base=5
for a in "$@"; do [ "$a" = "--good" ] && base=8; done
[ "$MODE" = "worse" ] && base=2
echo "seed $DLTRICKS_SEED in cell $DLTRICKS_CELL"
echo "{\\"acc\\": 0.${base}$DLTRICKS_SEED, \\"val_acc\\": [0.1, 0.3, 0.${base}], \\"note\\": \\"text is ignored\\"}"
"""


def test_shell_script_study_file_helps_and_hurts_with_runs_in_the_ledger(tmp_path):
    repo = tmp_path / "project"
    repo.mkdir()
    script(repo, "train.sh", SHELL)
    (repo / "study.toml").write_text(textwrap.dedent("""
        [ablate]
        command = "./train.sh --seed {seed}"
        metric = "acc"
        seeds = 6
        workers = 2
        study = "shell"
        [ablate.tricks]
        good = ["--good"]
        worse = { env = { MODE = "worse" } }
        """))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "train.sh"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"], cwd=repo, check=True)

    done = run_cli(["ablate", "study.toml"], repo)
    assert done.returncode == 0, done.stderr
    assert "+good" in done.stdout and "helps" in done.stdout and "hurts" in done.stdout
    trials = trials_of(repo, "shell")
    assert Counter(t.user_attrs["cell"] for t in trials) == {f"v{v}s{s}": 1 for v in range(3) for s in range(6)}
    scores = {(t.user_attrs["variant"], t.user_attrs["seed"]): t.value for t in trials}
    assert scores[("+good", 3)] == pytest.approx(0.83) and scores[("baseline", 2)] == pytest.approx(0.52)
    assert scores[("+worse", 1)] == pytest.approx(0.21)

    runs = Ledger(root=repo / "runs").runs(study="shell")
    assert len(runs) == 18 and {r.status for r in runs} == {"completed"}
    good = next(r for r in runs if r.variant == "+good" and r.seed == 4)
    assert good.name == "train.sh" and good.recipe["command"]["argv"] == ["./train.sh", "--seed", "4", "--good"]
    assert good.recipe["command"]["cwd"] == str(repo.resolve())
    assert good.curves["val_acc"] == [0.1, 0.3, 0.8] and good.metrics == {"acc": 0.84}
    assert good.git_commit is not None and good.git_dirty  # study.toml is not committed: the diff is kept
    run_dir = repo / "runs" / "runs" / good.id
    assert "study.toml" in (run_dir / "uncommitted.diff").read_text()
    kept = json.loads((run_dir / "command.json").read_text())
    assert kept["exit_code"] == 0 and kept["wall_s"] > 0 and kept["stdout_tail"][0] == "seed 4 in cell v1s4"
    report = repo / "runs" / "reports" / "shell"
    assert (report / "curves.png").is_file()
    md = (report / "report.md").read_text()
    assert "args: --good" in md and "env: MODE=worse" in md and "./train.sh --seed {seed}" in md

    # the report again, from storage
    again = run_cli(["report", "shell"], repo)
    assert again.returncode == 0 and "hurts" in again.stdout


TORCH = """
import argparse, torch
import dltricks  # report_metrics: no torch needed, but this script has it anyway

p = argparse.ArgumentParser()
p.add_argument("--seed", type=int)
p.add_argument("--lr", type=float, default=0.1)
a = p.parse_args()
torch.manual_seed(a.seed)
x = torch.randn(256, 8)
y = (x @ torch.randn(8, 1) > 0).float()
model = torch.nn.Linear(8, 1)
curve = []
for epoch in range(5):
    for _ in range(20):
        model.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        loss.backward()
        with torch.no_grad():  # plain SGD by hand: torch.optim's first step imports torch._dynamo (seconds)
            for w in model.parameters():
                w -= a.lr * w.grad
    acc = ((model(x) > 0).float() == y).float().mean().item()
    curve.append(acc)
    dltricks.report_metrics({"val_accuracy": acc, "val_accuracy_curve": curve, "threads": torch.get_num_threads()})
"""


def test_pytorch_script_with_far_too_low_learning_rate_hurts(tmp_path):
    script(tmp_path, "train.py", TORCH)
    done = run_cli(["ablate", "--command", f"{sys.executable} train.py --seed {{seed}} --lr {{lr=0.5}}",
                    "--trick", "lowlr:{lr}=1e-5", "--metric", "val_accuracy", "--seeds", "6", "--workers", "2",
                    "--study", "torchy"], tmp_path)
    assert done.returncode == 0, done.stderr
    line = next(s for s in done.stdout.splitlines() if s.startswith("+lowlr "))
    assert "hurts" in line.split(), done.stdout
    runs = Ledger(root=tmp_path / "runs").runs(study="torchy")
    assert sorted(r.recipe["command"]["argv"][-1] for r in runs) == ["0.5"] * 6 + ["1e-5"] * 6
    assert all(len(r.curves["val_accuracy_curve"]) == 5 for r in runs)
    # two cells side by side split the cores (unless the user set a number of threads)
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, len(os.sched_getaffinity(0)) // 2))
    assert {r.metrics["threads"] for r in runs} == {threads}


def test_failures_are_cells_that_say_why(tmp_path):
    script(tmp_path, "flaky.sh", """
        #!/bin/sh
        case "$DLTRICKS_SEED" in
          0) echo '{"acc": 0.5}' ;;
          1) echo "loading data"; echo "CUDA out of memory on seed 1" >&2; exit 3 ;;
          2) echo "no metrics here" ;;
          3) echo '{"acc": NaN}' ;;
          4) echo '{"loss": 0.2, "f1": 0.3}' ;;
          5) echo '{"acc": 0.5' ;;
        esac
        """)
    done = run_cli(["ablate", "--command", "./flaky.sh", "--trick", "x:--x", "--metric", "acc", "--seeds", "6",
                    "--study", "flaky"], tmp_path)
    assert done.returncode == 1, done.stderr  # failed cells: a script must see it
    reasons = {t.user_attrs["seed"]: t.user_attrs.get("failure", "") for t in trials_of(tmp_path, "flaky")
               if t.user_attrs["variant"] == "baseline"}
    assert reasons[0] == ""
    assert "exited with code 3" in reasons[1] and "CUDA out of memory on seed 1" in reasons[1]
    assert "not valid JSON" in reasons[2] and "no metrics here" in reasons[2]
    assert "metric acc is nan" in reasons[3]
    assert "metric acc was not reported; the command reported: f1, loss" in reasons[4]
    assert "not valid JSON" in reasons[5]
    assert "CUDA out of memory on seed 1" in done.stdout
    failed = Ledger(root=tmp_path / "runs").runs(study="flaky", status="failed")
    assert len(failed) == 10 and all(r.failure for r in failed)


def test_a_hanging_cell_is_stopped_with_its_whole_process_group(tmp_path):
    script(tmp_path, "hang.sh", """
        #!/bin/sh
        if [ "$HANG" = "1" ]; then
          sleep 300 &
          echo $! >> "$PIDS"
          echo "hanging" >&2
          wait
        fi
        echo '{"acc": 0.5}'
        """)
    pids = tmp_path / "pids.txt"
    start = time.monotonic()
    done = run_cli(["ablate", "--command", "./hang.sh", "--trick", "hang:$HANG=1", "--metric", "acc", "--seeds",
                    "2", "--cell-timeout", "1.5", "--study", "hangs"], tmp_path,
                   env={"PIDS": str(pids)})
    assert time.monotonic() - start < 60
    assert done.returncode == 1, done.stderr
    reasons = [t.user_attrs.get("failure", "") for t in trials_of(tmp_path, "hangs")
               if t.user_attrs["variant"] == "+hang"]
    assert len(reasons) == 2 and all("timed out after 1.5 s" in r and "hanging" in r for r in reasons)
    for pid in map(int, pids.read_text().split()):  # the script's own child went with it: no orphans
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_bad_input_is_one_line_before_anything_runs(tmp_path):
    script(tmp_path, "ok.sh", "#!/bin/sh\necho '{\"acc\": 1}'\n")
    cases = [
        (["--command", "no-such-program-xyz --seed {seed}", "--trick", "a:--a"], "command 'no-such-program-xyz' "
                                                                                  "not found"),
        (["--command", "./ok.sh --lr {lr}", "--trick", "a:--a"], "placeholder {lr}"),
        (["--command", "./ok.sh", "--trick", "a:"], "trick a has empty arguments"),
        (["--command", "./ok.sh", "--trick", "a:--a", "--metric", "acc", "--cell-timeout", "0"], "--cell-timeout"),
        (["--command", "./ok.sh", "--trick", "label_smoothing"], "NAME:ARGS"),
    ]
    for args, message in cases:
        done = run_cli(["ablate", *args, "--metric", "acc"], tmp_path)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert message in lines[-1] and "Traceback" not in done.stderr
        assert len(lines) == 1 or lines[0].startswith("usage:")  # one line (argparse's own: after its usage)
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing was written


def test_report_metrics_needs_no_torch(tmp_path):
    code = ("import sys, dltricks; dltricks.report_metrics({'a': 1, 'c': [1, 2]}); "
            "dltricks.report_metrics({'b': 2.5}, path=sys.argv[1]); assert 'torch' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.json")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"a": 1.0, "c": [1.0, 2.0]}
    assert json.loads((tmp_path / "m.json").read_text()) == {"b": 2.5}


def test_kill_9_of_a_two_worker_study_then_rerun_runs_every_cell_once(tmp_path):
    script(tmp_path, "slow.sh", """
        #!/bin/sh
        echo $$ >> "$PIDS"
        sleep 0.4
        echo "{\\"acc\\": 0.5$DLTRICKS_SEED}"
        """)
    pids = tmp_path / "pids.txt"
    env = {**os.environ, "PIDS": str(pids), "DLTRICKS_HOME": str(tmp_path / "runs"), "DLTRICKS_NO_PROGRESS": "1"}
    args = [*CLI, "ablate", "--command", "./slow.sh", "--trick", "x:--x", "--trick", "y:--y", "--metric", "acc",
            "--seeds", "4", "--workers", "2", "--study", "killed", "--quiet"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    ledger_db = tmp_path / "runs" / "ledger.db"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if ledger_db.exists() and proc.poll() is None:
            try:
                ledger = Ledger(root=tmp_path / "runs")
                if len(ledger.runs(study="killed", status="completed")) >= 3 and \
                        ledger.runs(study="killed", status="running"):
                    break
            except Exception:  # noqa: BLE001 - the study is still creating its tables
                continue
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    time.sleep(0.5)
    for pid in map(int, pids.read_text().split()):  # no cell outlived its killed worker
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    before = len(trials_of(tmp_path, "killed"))
    assert 3 <= before < 12

    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    trials = trials_of(tmp_path, "killed")
    assert Counter(t.user_attrs["cell"] for t in trials) == {f"v{v}s{s}": 1 for v in range(3) for s in range(4)}
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    runs = Ledger(root=tmp_path / "runs").runs(study="killed")
    completed = Counter((r.variant, r.seed) for r in runs if r.status == "completed")
    assert len(completed) == 12 and set(completed.values()) == {1}
    assert not [r for r in runs if r.status == "running"]  # the killed cells' runs are closed, not left running


def test_workers_on_postgresql_join_a_command_study(fresh_postgres_url, tmp_path):
    from dltricks.search import claims
    from dltricks.search import command as cm
    from dltricks.search import study as st
    from dltricks.search.command_job import define, spec_of

    script(tmp_path, "ok.sh", """
        #!/bin/sh
        sleep 0.1
        echo "{\\"acc\\": 0.5$DLTRICKS_SEED}"
        """)
    ledger = Ledger(fresh_postgres_url, root=tmp_path / "runs")
    d = define(spec_of("./ok.sh", cwd=tmp_path), [cm.parse_trick("x:--x")], seeds=3, metric="acc", study="pg")
    claims.ensure_table(ledger)
    st.create_or_load(ledger, d)
    env = {**os.environ, "DLTRICKS_HOME": str(tmp_path / "runs")}
    cmd = [*CLI, "worker", "--study", "pg", "--storage", fresh_postgres_url, "--quiet"]
    procs = [subprocess.Popen(cmd, cwd="/", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum(int(o.split("ran ")[1].split()[0]) for o, _ in outs) == 6
    trials = optuna.load_study(study_name="pg", storage=fresh_postgres_url).get_trials(deepcopy=False)
    assert Counter(t.user_attrs["cell"] for t in trials) == {f"v{v}s{s}": 1 for v in range(2) for s in range(3)}
    assert {r.recipe["command"]["cwd"] for r in ledger.runs(study="pg")} == {str(tmp_path.resolve())}


# A script without torch that reports its curve after every epoch through dltricks.report_metrics; the best
# learning rate is 0.01 (accuracy falls with the distance in decades), plus a little noise per seed.
CURVES = """
import argparse, math, time
import dltricks

p = argparse.ArgumentParser()
p.add_argument("--lr", type=float)
p.add_argument("--seed", type=int)
a = p.parse_args()
final = 0.9 - 0.1 * (math.log10(a.lr) + 2) ** 2 + 0.002 * a.seed
curve = []
for epoch in range(1, 7):
    curve.append(final * epoch / 6)
    dltricks.report_metrics({"val_accuracy": curve, "epochs": epoch})
    time.sleep(0.12)
"""


def test_tune_command_from_a_study_file_prunes_and_reruns_the_best(tmp_path):
    script(tmp_path, "train.py", CURVES)
    (tmp_path / "study.toml").write_text(textwrap.dedent(f"""
        [tune]
        command = "{sys.executable} train.py --lr {{lr=0.3}} --seed {{seed}}"
        metric = "val_accuracy"
        trials = 8
        sampler = "random"
        seeds_per_trial = 2
        pruner = "median"
        rerun_seeds = 3
        study = "tuned"
        [tune.space]
        lr = {{ low = 1e-4, high = 1.0, log = true }}
        """))
    done = run_cli(["tune", "study.toml", "--best", "best.toml"], tmp_path)
    assert done.returncode == 0, done.stderr
    trials = trials_of(tmp_path, "tuned")
    assert Counter(t.user_attrs["cell"] for t in trials) == {f"t{k}": 1 for k in range(8)}
    states = Counter(t.state for t in trials)
    assert states[TrialState.PRUNED] >= 1 and states[TrialState.COMPLETE] >= 4, states
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    for t in complete:  # the mean over the 2 paired seeds of the script's own score
        lr = t.user_attrs["config"]["lr"]
        assert t.values[0] == pytest.approx(0.9 - 0.1 * (math.log10(lr) + 2) ** 2 + 0.001, abs=1e-9)
        assert len(t.intermediate_values) == 6
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert all("pruned after step" in t.user_attrs["failure"] for t in pruned)
    best = max(complete, key=lambda t: t.values[0])
    assert "re-run on 3 fresh seeds: best" in done.stdout and "vs start" in done.stdout
    assert f"lr = {best.user_attrs['config']['lr']!r}" in (tmp_path / "best.toml").read_text()
    reruns = [r for r in Ledger(root=tmp_path / "runs").runs() if (r.study or "").startswith("tuned-rerun-")]
    assert len(reruns) == 6 and {r.seed for r in reruns} == {2, 3, 4}  # fresh seeds, both variants
    assert {r.recipe["command"]["argv"][3] for r in reruns if r.variant == "start"} == {"0.3"}  # the default
    assert {float(r.recipe["command"]["argv"][3]) for r in reruns if r.variant == "best"} == \
        {best.user_attrs["config"]["lr"]}
    # a pruned trial's script was stopped: it never reached its last epoch
    stopped = Ledger(root=tmp_path / "runs").get(pruned[0].user_attrs["run_ids"][0])
    assert stopped.status == "failed" and stopped.metrics.get("epochs", 0) < 6


def test_ctrl_c_ends_every_cell_process_group_and_a_rerun_finishes(tmp_path):
    script(tmp_path, "wait.sh", """
        #!/bin/sh
        sleep 300 &
        echo $! >> "$PIDS"
        echo $$ >> "$PIDS"
        if [ -e "$DONE" ]; then kill $!; echo "{\\"acc\\": 0.5$DLTRICKS_SEED}"; exit 0; fi
        wait
        """)
    pids, flag = tmp_path / "pids.txt", tmp_path / "finish"
    env = {**os.environ, "PIDS": str(pids), "DONE": str(flag), "DLTRICKS_HOME": str(tmp_path / "runs"),
           "DLTRICKS_NO_PROGRESS": "1"}
    args = [*CLI, "ablate", "--command", "./wait.sh", "--trick", "x:--x", "--metric", "acc", "--seeds", "1",
            "--workers", "2", "--study", "stopped", "--quiet"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (pids.exists() and len(pids.read_text().split()) >= 4):
        time.sleep(0.1)
    assert len(pids.read_text().split()) == 4, "both workers should be running a cell"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends to the foreground group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    time.sleep(0.3)
    for pid in map(int, pids.read_text().split()):  # the scripts and the children they started: all gone
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    runs = Ledger(root=tmp_path / "runs").runs(study="stopped")
    assert len(runs) == 2 and {r.status for r in runs} == {"interrupted"}

    flag.touch()
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert Counter(t.user_attrs["cell"] for t in trials_of(tmp_path, "stopped")) == {"v0s0": 1, "v1s0": 1}


def test_seeds_auto_stops_at_the_first_look_that_decides(tmp_path):
    script(tmp_path, "train.sh", SHELL)
    done = run_cli(["ablate", "--command", "./train.sh", "--trick", "good:--good", "--metric", "acc", "--seeds",
                    "auto", "--max-seeds", "12", "--study", "auto"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "helps" in next(s for s in done.stdout.splitlines() if s.startswith("+good"))
    # a shift of +0.3 on every seed is decided at the first look: 3 seeds of 12, nothing more was run
    assert sorted(t.user_attrs["cell"] for t in trials_of(tmp_path, "auto")) == ["v0s0", "v0s1", "v0s2",
                                                                                  "v1s0", "v1s1", "v1s2"]
