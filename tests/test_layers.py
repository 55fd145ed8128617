"""The layers and "no circles" contract (pyproject.toml's [tool.importlinter], checked by import-linter):
the package's import graph as it is passes, and the same check fails on a copy with one upward import or one
circle, so it is a contract that can break the build."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import dltricks

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(dltricks.__file__).parent


def lint_imports(src_parent: Path) -> subprocess.CompletedProcess:
    """Run import-linter with the project's contracts on the dltricks package found in ``src_parent``."""
    env = {**os.environ, "PYTHONPATH": str(src_parent)}
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def layers() -> list[str]:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    return next(c for c in contracts if c["type"] == "layers")["layers"]


def test_the_layers_name_every_package():
    named = {name.strip() for layer in layers() for name in layer.split("|")}
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()} - {"recipes"}
    modules = {p.stem for p in SRC.glob("*.py")} - {"__init__"}
    assert packages | modules <= named, f"not in any layer: {sorted((packages | modules) - named)}"


def test_the_package_keeps_its_layers_and_has_no_circle():
    done = lint_imports(SRC.parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


@pytest.mark.parametrize("module, added, message", [
    # an import inside a function counts as much as one at the top
    ("loop/tasks.py", "def _upward():\n    from dltricks.runner import train  # noqa\n",
     "dltricks.loop is not allowed to import dltricks.runner"),
    ("data/splits.py", "from dltricks.data import registry as _circle  # noqa\n",
     "No cycles are allowed in dltricks.data"),
])
def test_the_contract_fails_on_an_upward_import_or_a_circle(tmp_path, module, added, message):
    copy = tmp_path / "dltricks"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / module).write_text((copy / module).read_text() + "\n\n" + added)
    done = lint_imports(tmp_path)
    assert done.returncode != 0 and message in done.stdout, done.stdout[-3000:]
