"""Does report.html lead with the answer? A check in a real browser (headless Chromium), documented.

    python benchmarks/report_first_screen.py [REPORT.html] [--out shot.png]

Without a report it writes one from a small simulated study (a baseline and four variants: one that
hurts, one that helps, one equivalent, one inconclusive), then takes a 1280x800 screenshot with
`chromium --headless` (Debian: `apt-get install chromium`) and checks, from Chromium's own layout
(`--dump-dom` after a script measured the page), that the verdict summary, the results table and the
forest plot end above y = 800. Look at the PNG as well: it is what a reader sees first.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from dltricks.ledger.report import write_report
from dltricks.ledger.stats import compare

MEASURE = """<script>
window.addEventListener('load', () => {
  const out = {};
  for (const [k, sel] of [['summary', '#summary'], ['table', 'table.results'], ['forest', 'img.forest']]) {
    const el = document.querySelector(sel);
    out[k] = el ? Math.round(el.getBoundingClientRect().bottom) : -1;
  }
  document.body.setAttribute('data-bottoms', JSON.stringify(out));
});
</script>"""


def sample_report(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    seed = rng.normal(0, 0.02, 5)
    base = {s: 0.95 + seed[s] + rng.normal(0, 0.003) for s in range(5)}
    effects = {"+cripple": -0.8, "+label_smoothing": 0.02, "+noop": 0.0, "+mixup": 0.004}
    scores = {"baseline": base}
    for name, eff in effects.items():
        noise = 0.0 if name == "+noop" else 0.006
        scores[name] = {s: 0.95 + seed[s] + eff + rng.normal(0, noise) for s in range(5)}
    stats = compare(scores, "baseline", higher_is_better=True, metric="test_accuracy")
    changes = {"+cripple": "train.lr: 0.003 -> 1e-06", "+label_smoothing": "train.label_smoothing: 0.0 -> 0.1",
               "+noop": "no change", "+mixup": "train.mixup: 0.0 -> 0.2"}
    header = {"study": "sample", "mode": "add", "metric": "test_accuracy (higher is better)",
              "ROPE": "±0.005 test_accuracy (default for this metric)", "seeds": "0, 1, 2, 3, 4",
              "environment": "python 3.12\ntorch 2.13.0"}
    paths = write_report(folder, title="Ablation: sample", stats=stats, scores=scores, metric="test_accuracy",
                         higher_is_better=True, header=header, changes=changes,
                         notes=["the recipe has one_cycle on; the baseline turns it off"],
                         recipe='[train]\nlr = 0.003\n')
    return paths["html"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", nargs="?")
    parser.add_argument("--out", default="report-first-screen.png")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        print("no chromium on PATH: apt-get install chromium", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="dltricks-report-"))
    html = Path(args.report).resolve() if args.report else sample_report(work / "report")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,800"]
    subprocess.run([browser, *flags, f"--screenshot={Path(args.out).resolve()}", html.as_uri()],
                   check=True, capture_output=True, timeout=120)
    measured = html.with_name(".measured.html")
    measured.write_text(html.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    dom = subprocess.run([browser, *flags, "--virtual-time-budget=5000", "--dump-dom", measured.as_uri()],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    measured.unlink()
    found = re.search(r"data-bottoms=\"([^\"]+)\"", dom)
    bottoms = eval(found.group(1).replace("&quot;", '"')) if found else {}  # noqa: S307 - a dict of ints we wrote
    print(f"screenshot: {Path(args.out).resolve()}")
    ok = True
    for key in ("summary", "table", "forest"):
        bottom = bottoms.get(key, -1)
        fits = 0 < bottom <= 800
        ok &= fits
        print(f"{key:8s} ends at y = {bottom:4d} px  {'on the first screen' if fits else 'NOT on the first screen'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
