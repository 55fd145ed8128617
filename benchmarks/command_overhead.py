"""How much does a command study add to each cell, over running the same command by hand?

The command does nothing but print its metrics (a shell script echoing one JSON line), so everything a
cell costs beyond running it directly is the study's: rendering the command, the claim, the ledger run
with its git state, the process group, reading the metrics, the Optuna trial. Two studies of different
sizes (``dltricks ablate --command`` through the command line, one worker, in a git repository) give the
time per cell as the slope between them, free of the fixed cost (start-up, report), which is the intercept.
The direct runs are timed in the same run, interleaved with the studies, so that drift on a shared machine
hits both alike.

    python benchmarks/command_overhead.py                 # 4 vs 24 cells, 3 repetitions
    python benchmarks/command_overhead.py --small 4 --large 40 --reps 5

Target: per-cell overhead (study per cell - direct per run) < 0.3 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = "#!/bin/sh\necho '{\"acc\": 0.5}'\n"


def direct(folder: Path, n: int) -> float:
    """Seconds per run of the command run ``n`` times by hand (as a shell loop would: one process each)."""
    start = time.perf_counter()
    for seed in range(n):
        subprocess.run(["./metrics.sh", "--seed", str(seed)], cwd=folder, check=True, capture_output=True)
    return (time.perf_counter() - start) / n


def study(folder: Path, cells: int, tag: str) -> float:
    """Seconds for a whole `dltricks ablate --command` study of ``cells`` cells (2 variants x cells/2 seeds)."""
    env = {**os.environ, "DLTRICKS_HOME": str(folder / f"runs-{tag}"), "DLTRICKS_NO_PROGRESS": "1"}
    env.pop("DLTRICKS_LEDGER", None)
    cmd = [sys.executable, "-m", "dltricks.cli", "ablate", "--command", "./metrics.sh --seed {seed}",
           "--trick", "x:--x", "--metric", "acc", "--seeds", str(cells // 2), "--workers", "1", "--quiet",
           "--study", tag]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
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
        per_run, slopes, fixed = [], [], []
        for r in range(a.reps):
            per_run.append(direct(folder, a.large))
            small = study(folder, a.small, f"s{r}")
            large = study(folder, a.large, f"l{r}")
            slope = (large - small) / (a.large - a.small)
            slopes.append(slope)
            fixed.append(small - a.small * slope)
            print(f"rep {r}: direct {per_run[-1] * 1000:.1f} ms/run; study {small:.2f} s ({a.small} cells), "
                  f"{large:.2f} s ({a.large} cells): {slope * 1000:.0f} ms/cell", flush=True)
        d, s = statistics.median(per_run), statistics.median(slopes)
        print(f"direct run: {d * 1000:.1f} ms; study cell: {s * 1000:.0f} ms; overhead per cell "
              f"{(s - d) * 1000:.0f} ms (target < 300 ms); fixed cost of a study {statistics.median(fixed):.2f} s")


if __name__ == "__main__":
    main()
