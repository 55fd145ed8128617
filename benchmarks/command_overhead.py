"""How much does a command study add to each cell, over running the same command by hand?

The command does nothing but print its metrics (a shell script echoing one JSON line), so everything a
cell costs beyond running it directly is the study's: rendering the command, the claim, the ledger run
with its git state, the process group, reading the metrics, the Optuna trial. Two studies of different
sizes (``dltricks ablate --command`` through the command line, one worker, in a git repository) give the
time per cell as the slope between them, free of the fixed cost (start-up, report), which is the intercept.
The direct runs are timed in the same run, interleaved with the studies, so that drift on a shared machine
hits both alike. CPU seconds (the processes' own, children included) are reported beside the wall-clock
ones: on a machine that others keep busy, they are the steadier measure of what the study itself costs.

    python benchmarks/command_overhead.py                 # 4 vs 24 cells, 3 repetitions
    python benchmarks/command_overhead.py --small 4 --large 40 --reps 5

Target: per-cell overhead (study per cell - direct per run) < 0.3 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = "#!/bin/sh\necho '{\"acc\": 0.5}'\n"


def cpu() -> float:
    """CPU seconds of the children this process has waited for."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def direct(folder: Path, n: int) -> tuple[float, float]:
    """(wall, CPU) seconds per run of the command run ``n`` times by hand (one process each, as a shell loop)."""
    start, c = time.perf_counter(), cpu()
    for seed in range(n):
        subprocess.run(["./metrics.sh", "--seed", str(seed)], cwd=folder, check=True, capture_output=True)
    return (time.perf_counter() - start) / n, (cpu() - c) / n


def study(folder: Path, cells: int, tag: str) -> tuple[float, float]:
    """Seconds for a whole `dltricks ablate --command` study of ``cells`` cells (2 variants x cells/2 seeds)."""
    env = {**os.environ, "DLTRICKS_HOME": str(folder / f"runs-{tag}"), "DLTRICKS_NO_PROGRESS": "1"}
    env.pop("DLTRICKS_LEDGER", None)
    cmd = [sys.executable, "-m", "dltricks.cli", "ablate", "--command", "./metrics.sh --seed {seed}",
           "--trick", "x:--x", "--metric", "acc", "--seeds", str(cells // 2), "--workers", "1", "--quiet",
           "--study", tag]
    start, c = time.perf_counter(), cpu()
    done = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start, cpu() - c
    if done.returncode != 0:
        raise SystemExit(f"the study failed: {done.stderr.strip()[-500:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=4, help="cells of the small study (even)")
    ap.add_argument("--large", type=int, default=24, help="cells of the large study (even)")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dltricks-command-bench-") as tmp:
        folder = Path(tmp)
        (folder / "metrics.sh").write_text(SCRIPT)
        (folder / "metrics.sh").chmod(0o755)
        git = ["git", "-c", "user.name=b", "-c", "user.email=b@b"]
        subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
        subprocess.run([*git, "add", "metrics.sh"], cwd=folder, check=True)
        subprocess.run([*git, "commit", "-qm", "bench"], cwd=folder, check=True)
        direct(folder, 3)  # warm the page cache
        rows: dict[str, list[float]] = {k: [] for k in ("direct", "direct_cpu", "slope", "slope_cpu", "fixed")}
        for r in range(a.reps):
            d_wall, d_cpu = direct(folder, a.large)
            (s_wall, s_cpu), (l_wall, l_cpu) = study(folder, a.small, f"s{r}"), study(folder, a.large, f"l{r}")
            slope, slope_cpu = (l_wall - s_wall) / (a.large - a.small), (l_cpu - s_cpu) / (a.large - a.small)
            for k, v in (("direct", d_wall), ("direct_cpu", d_cpu), ("slope", slope), ("slope_cpu", slope_cpu),
                         ("fixed", s_wall - a.small * slope)):
                rows[k].append(v)
            print(f"rep {r}: direct {d_wall * 1000:.1f} ms/run ({d_cpu * 1000:.1f} ms CPU); study {s_wall:.2f} s "
                  f"({a.small} cells), {l_wall:.2f} s ({a.large} cells): {slope * 1000:.0f} ms/cell "
                  f"({slope_cpu * 1000:.0f} ms CPU)", flush=True)
        m = {k: statistics.median(v) for k, v in rows.items()}
        print(f"overhead per cell: {(m['slope'] - m['direct']) * 1000:.0f} ms wall, "
              f"{(m['slope_cpu'] - m['direct_cpu']) * 1000:.0f} ms CPU (target < 300 ms); direct run "
              f"{m['direct'] * 1000:.1f} ms; fixed cost of a study {m['fixed']:.2f} s; load {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores")

if __name__ == "__main__":
    main()
