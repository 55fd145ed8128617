"""The git version of the code a run used: commit, whether the tree was dirty, and the diff.

A run records ``git_state(cwd)`` so that any result can be traced to the exact code that
produced it, even when it came from uncommitted changes. "Dirty" counts modified tracked
files *and* untracked files that are not ignored, because a new module the run imported is
as much a part of its code as an edit.

Git is called as a subprocess with a timeout; outside a repository, in a repository with no
commits yet, or on a machine without git, the answer is still a valid :class:`GitState`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GitState", "git_state", "keep_out_of_git"]

TIMEOUT_S = 20.0
# Untracked files larger than this are hashed but not copied into the saved diff.
MAX_UNTRACKED_DIFF_BYTES = 1 << 20


@dataclass(frozen=True)
class GitState:
    """Where the code stood. ``commit`` is None outside a repository or before the first commit."""

    commit: str | None
    dirty: bool
    diff_hash: str | None  # sha256 of the changes against HEAD; None when clean
    diff: str  # a patch `git apply` accepts (tracked changes, then untracked files); "" when clean

    @property
    def short(self) -> str:
        """``abc1234`` or ``abc1234*`` when dirty; ``-`` outside git."""
        if self.commit is None:
            return "-*" if self.dirty else "-"
        return self.commit[:7] + ("*" if self.dirty else "")


NOT_A_REPO = GitState(commit=None, dirty=False, diff_hash=None, diff="")


def _git(args: list[str], cwd: Path) -> bytes | None:
    """stdout of ``git ARGS``, or None if git is missing, fails or hangs."""
    env = dict(os.environ)
    # GIT_OPTIONAL_LOCKS=0: `git status` would otherwise refresh the index and take
    # index.lock, which races when several workers start runs in one checkout.
    env.update(GIT_OPTIONAL_LOCKS="0", LC_ALL="C", GIT_TERMINAL_PROMPT="0")
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, timeout=TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _untracked_patch(name: str, data: bytes) -> bytes:
    """A git-style "new file" patch for one untracked file (binary or big ones as a note)."""
    head = f"diff --git a/{name} b/{name}\nnew file mode 100644\n".encode()
    if b"\0" in data or len(data) > MAX_UNTRACKED_DIFF_BYTES:
        return head + f"Binary files /dev/null and b/{name} differ\n".encode()
    if not data:
        return head
    lines = data.split(b"\n")
    missing_newline = lines[-1] != b""
    if not missing_newline:
        lines = lines[:-1]
    body = b"".join(b"+" + line + b"\n" for line in lines)
    if missing_newline:
        body += b"\\ No newline at end of file\n"
    return head + f"--- /dev/null\n+++ b/{name}\n@@ -0,0 +1,{len(lines)} @@\n".encode() + body


def keep_out_of_git(folder: Path) -> None:
    """Write ``folder/.gitignore`` holding ``*`` (as virtual environments do), so that what dltricks
    writes there (the ledger, weights, checkpoints, reports) never shows up in the user's repository."""
    ignore = folder / ".gitignore"
    if folder.is_dir() and not ignore.exists():
        try:
            ignore.write_text("# written by dltricks: runs, weights and reports are not your code\n*\n")
        except OSError:  # a read-only folder: git_state's exclude still keeps it out of the state
            pass


def _excludes(root: Path, exclude: tuple[Path, ...]) -> list[str]:
    """Pathspecs (``-- . :(exclude)dltricks-runs``) that leave out the excluded folders inside ``root``."""
    specs = []
    for folder in exclude:
        try:
            rel = Path(folder).resolve().relative_to(root.resolve())
        except ValueError:  # not inside this repository
            continue
        if rel.parts:
            specs.append(f":(exclude,top){rel.as_posix()}")
    return ["--", ".", *specs] if specs else []


def git_state(cwd: str | Path | None = None, exclude: tuple[str | Path, ...] = ()) -> GitState:
    """The git state of the repository containing ``cwd`` (default: the current directory).

    Folders in ``exclude`` (the ledger's own) are not part of the code: changes there never make the
    state dirty nor enter the diff, even where no ``.gitignore`` keeps them out."""
    cwd = Path(cwd) if cwd is not None else Path.cwd()
    top = _git(["rev-parse", "--show-toplevel"], cwd)
    if top is None:
        return NOT_A_REPO
    root = Path(top.decode("utf-8", "surrogateescape").strip())
    only = _excludes(root, tuple(Path(p) for p in exclude))

    head = _git(["rev-parse", "--verify", "-q", "HEAD"], root)
    commit = head.decode().strip() if head else None
    # Before the first commit there is no HEAD: compare against the empty tree instead.
    base = commit or (_git(["hash-object", "-t", "tree", "/dev/null"], root) or b"").decode().strip()

    status = _git(["status", "--porcelain", "-z", "--untracked-files=normal", *only], root)
    if not status:  # clean (or status failed: nothing reliable to record)
        return GitState(commit=commit, dirty=False, diff_hash=None, diff="")

    tracked = _git(["diff", base, "--binary", "--no-color", "--no-ext-diff", "--no-textconv", *only], root) or b""
    listing = _git(["ls-files", "--others", "--exclude-standard", "-z", *only], root) or b""
    untracked = sorted(n.decode("utf-8", "surrogateescape") for n in listing.split(b"\0") if n)

    digest = hashlib.sha256(tracked)
    patch = [tracked]
    for name in untracked:
        try:
            data = (root / name).read_bytes()
        except OSError:  # vanished or unreadable between listing and reading
            data = b""
        # Names and content hashes, NUL-separated so that no two file sets hash alike.
        digest.update(b"\0untracked\0" + name.encode("utf-8", "surrogateescape") + b"\0")
        digest.update(hashlib.sha256(data).digest())
        patch.append(_untracked_patch(name, data))
    diff = b"".join(patch).decode("utf-8", "surrogateescape")
    return GitState(commit=commit, dirty=True, diff_hash=digest.hexdigest(), diff=diff)
