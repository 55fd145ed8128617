"""Local worker processes of a sweep (ablation, tuning, architecture search): started first, told the study
once it exists; :func:`run_workers` runs them beside this process under one progress display.

A new process needs seconds before it can train (Python, torch, and torch._dynamo, which every
torch optimiser imports). `dltricks ablate --workers N` therefore starts its N - 1 children before it
has even defined the study, and they read the study, the ledger's URL and its home from a pipe (not the
command line, where any user of the machine could read a password in the URL). If the sweep never
starts (a mistyped trick), the pipe closes empty and they exit without touching anything.

On Linux, where each child trains with one thread (on 2 cores, 2 workers), the children are forked from
this process once it has imported torch and the training code: they start warm, in milliseconds,
instead of importing for seconds on a core the sweep needs. A forked child must never enter an OpenMP
parallel region (GNU OpenMP hangs there when the parent had started its thread pool), and with one
thread torch, MKL and oneDNN run every operator inline (the rule torch's own DataLoader workers
follow). With more threads per child, or other Python threads running here, the children are fresh
`dltricks worker --study -` processes that warm up on their own.

A process that has run nothing yet may do better: the command line marks itself fresh
(:func:`mark_fresh`) and, while it has started no thread since, `dltricks ablate` forks all N workers,
with any number of threads each (1 worker: both cores), before anything else. They import
torch._dynamo on their own cores while this one defines the study, opens the storage and loads the
report's libraries; then it only coordinates (progress, report). Measured on 2 cores: a 2-cell study's
fixed cost fell by about a second.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.search import cells
from dltricks.search import study as st
from dltricks.search.progress import Progress

# How a worker process opens the study it is handed: StudyJob (ablation cells), or a search's trials with
# their proposer. Forked children inherit it; `dltricks worker` children pick it from what is stored.
Opener = Callable[[Ledger, str], cells.Job]


def plan(workers: int) -> tuple[int, int]:
    """(processes, threads each) for ``workers`` local workers: no more processes than free cores, whose
    threads split those cores, and never more threads than this process may use.

    Processes beyond the free cores would only take turns on them, each paying its own start-up: on a
    machine where other jobs kept the cores busy, 2 workers took 1.2x as long as 1."""
    import torch

    from dltricks import cores

    free = cores.free_cores()
    n = max(1, min(workers, free))
    # torch.set_num_threads / OMP_NUM_THREADS set by the user are a ceiling too: on a busy machine,
    # more threads than free cores make every step wait on the slowest one.
    return n, max(1, min(torch.get_num_threads(), free // n))


def parse_gpus(spec: str, workers: int | None) -> list[str]:
    """``--gpus 0,1,2,3`` or ``auto`` (every CUDA device): one device per worker, in order; a device named
    twice is shared by two workers (asked for), else two workers never share one. One line when a device
    does not exist or there are fewer devices than workers."""
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    there = f"this machine has {have} CUDA device(s) (0..{have - 1})" if have else "this machine has no CUDA device"
    if spec.strip() == "auto":
        if not have:
            raise DltricksError(f"--gpus auto: {there}; leave --gpus out to train on the CPU")
        gpus = [str(i) for i in range(have)][:workers or have]
    else:
        gpus = [g.strip() for g in spec.split(",")]
        bad = [g for g in gpus if not g.isdigit() or int(g) >= have]
        if bad:
            raise DltricksError(f"--gpus {spec}: no CUDA device {bad[0]!r}; {there}"
                                + ("" if have else "; leave --gpus out to train on the CPU"))
    if workers is not None and workers > len(gpus):
        raise DltricksError(f"--workers {workers} but --gpus gives {len(gpus)} device(s): name a device twice to "
                            f"share it (e.g. --gpus 0,0,1,1), or give fewer workers")
    return gpus


def assigned_gpus() -> list[str]:
    """The devices ``--gpus`` gave this sweep's workers (``DLTRICKS_GPUS``), in order; [] for none."""
    return [g for g in os.environ.get("DLTRICKS_GPUS", "").split(",") if g]


def warm_up() -> None:
    """Import what every worker of a sweep needs: torch, the training code, torch._dynamo (every torch
    optimiser imports it on first use) and Optuna's storage with the Alembic modules it opens a database
    with, all with the garbage collector paused. The imports create some 300 000 objects that live as long
    as the process; the collections they would trigger walk them again and again (about a second of CPU
    on a 2-core machine, measured) and find nothing to free."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        import alembic.migration  # noqa: F401
        import alembic.script  # noqa: F401
        import optuna  # noqa: F401
        import torch  # noqa: F401

        import dltricks.analysis.cost  # noqa: F401 - each run counts its FLOPs
        import dltricks.methods.uncertainty  # noqa: F401 - each classification run scores its calibration
        import dltricks.runner.run  # noqa: F401

        try:
            import torch._dynamo  # noqa: F401
        except ImportError:  # pragma: no cover - a torch without dynamo trains all the same
            pass
    finally:
        if collecting:
            gc.enable()


def _os_threads() -> int | None:
    """Threads of this process as the OS counts them (torch's OpenMP pool included); None off Linux."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


_fresh_threads: int | None = None  # the OS thread count when mark_fresh() was called


def mark_fresh() -> None:
    """Say that this process has imported torch and run nothing else yet (the command line does, before it
    reads the recipe). Until it starts a thread of its own (torch's OpenMP pool, on the first parallel
    operator), children forked from it may train with any number of threads."""
    global _fresh_threads
    import torch  # noqa: F401 - importing it starts a thread of its own: count after it, not before

    _fresh_threads = _os_threads()


def still_fresh() -> bool:
    """True while this process was marked fresh and has started no thread since."""
    return _fresh_threads is not None and _os_threads() == _fresh_threads


def can_fork(threads: int) -> bool:
    """True where children that train with ``threads`` threads may be forked from this process: Linux,
    one thread each or a process still fresh (see the module docstring), and no other Python thread here
    that a child could inherit in the middle of holding a lock."""
    return (sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
            and (threads == 1 or still_fresh()) and threading.active_count() == 1)


def load_report_modules() -> None:
    """Import what the report needs (scipy, matplotlib: most of a second) at a moment a core is idle."""
    import matplotlib.figure  # noqa: F401

    import dltricks.ledger.report  # noqa: F401


class _Forked:
    """A worker forked from this process, with the part of :class:`subprocess.Popen`'s interface that
    :class:`LocalWorkers` uses (``stdin`` is the pipe it reads the study from)."""

    def __init__(self, threads: int, log: Any, inherited: list[int], opener: Opener, gpu: str | None = None):
        read, write = os.pipe()
        self.process = multiprocessing.get_context("fork").Process(
            target=_forked_worker, args=(read, [write, *inherited], threads, log.fileno(), opener, gpu), daemon=False)
        self.process.start()
        self.sentinel = self.process.sentinel  # readable once the child has exited
        os.close(read)
        self.stdin = os.fdopen(write, "w")
        self.pid = self.process.pid
        self.args = ["dltricks worker (forked)", "--threads", str(threads)]

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode

    def poll(self) -> int | None:
        return self.process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.process.exitcode

    def send_signal(self, sig: int) -> None:
        if self.process.exitcode is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _forked_worker(read: int, close: list[int], threads: int, log: int, opener: Opener, gpu: str | None = None) -> None:
    """In a forked child: the parent's pipes to other children closed (or they would never see the end of
    their study line), output to the log, then the cells of the study the parent writes to ``read``."""
    if gpu is not None:  # before CUDA starts in this process: it sees its one device as cuda:0
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    for fd in close:
        os.close(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(log, 2)
    # Python's streams too: the parent's may be anything (pytest's capture, a notebook's)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - lives as long as the process
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.environ["DLTRICKS_NO_PROGRESS"] = "1"
    warm_up()  # a no-op where the parent warmed up before forking
    with os.fdopen(read) as f:
        job = _job(f.readline())
    if job is None:
        return
    from dltricks import cores

    cores.look()  # the window that sizes its threads starts now, not while the parent was still busy
    ledger, study = job
    try:
        cells.work(opener(ledger, study), threads=threads)
    except DltricksError as e:  # one line, as the `dltricks worker` command prints it
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)


class LocalWorkers:
    """``n`` child workers, warming up; :meth:`hand_over` gives them the study, leaving the block stops them.

    ``coordinate``: the children do every cell and this process only waits for them (:func:`run`); they are
    forked cold and warm up on their own cores (`ablate` asks for it where this process is still fresh).
    ``opener``: how a forked child opens the study it is handed (children started as `dltricks worker`
    find out from the storage)."""

    def __init__(self, n: int, threads: int, opener: Opener, *, coordinate: bool = False):
        self.threads = threads
        self.procs: list[subprocess.Popen | _Forked] = []
        self.logs: list[Any] = []
        self.stopped: set[int] = set()
        self.handed_over = False
        self.coordinating = coordinate and n >= 1
        if n < 1:
            return
        fork = can_fork(threads)
        if fork and not coordinate:
            warm_up()  # here, once: the children inherit it (a no-op where the caller warmed up already)
        env = {**os.environ, "DLTRICKS_NO_PROGRESS": "1", "OMP_NUM_THREADS": str(threads)}
        cmd = [sys.executable, "-m", "dltricks.cli", "worker", "--study", "-", "--threads", str(threads), "--quiet"]
        # --gpus: one device per process; this one (when it works too) takes the first, before CUDA starts here
        gpus = assigned_gpus()
        if gpus and not coordinate:
            os.environ["CUDA_VISIBLE_DEVICES"] = gpus.pop(0)
        for i in range(n):
            gpu = gpus[i] if i < len(gpus) else None
            # stderr goes to a file, not a pipe: nobody reads a pipe while the workers run, and a worker
            # that filled one (warnings) would block forever
            log = tempfile.TemporaryFile(mode="w+", prefix="dltricks-worker-")  # noqa: SIM115 - closed in __exit__
            self.logs.append(log)
            if fork:
                inherited = [p.stdin.fileno() for p in self.procs]
                self.procs.append(_Forked(threads, log, inherited, opener, gpu))
            else:
                own = env if gpu is None else {**env, "CUDA_VISIBLE_DEVICES": gpu}
                self.procs.append(subprocess.Popen(cmd, env=own, cwd=os.getcwd(), stdin=subprocess.PIPE,
                                                   stdout=subprocess.DEVNULL, stderr=log, text=True))

    def __enter__(self) -> LocalWorkers:
        return self

    def hand_over(self, ledger: Ledger, study: str) -> None:
        self.handed_over = True
        # "checked": this process opened the storage a moment ago, tables and schema version checked
        line = json.dumps({"study": study, "url": ledger.url, "home": str(ledger.root),
                           "checked": ledger.url in st.CHECKED}) + "\n"
        for p in self.procs:
            try:
                p.stdin.write(line)
                p.stdin.close()
            except (BrokenPipeError, OSError):
                pass  # it died while warming up: its log says why, and this process does its cells

    def running(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def wait(self, job: cells.Job, on_tick: Callable[[], None]) -> None:
        """Wait for the children; stop them once every cell is recorded (one still importing torch
        would only find that out seconds from now, and one that is still running holds no cell)."""
        while self.running():
            if not job.left():
                for p in self.procs:
                    if p.poll() is None:
                        p.terminate()
                        self.stopped.add(p.pid)
                for p in self.procs:
                    p.wait()
                return
            on_tick()
            # woken at once when a forked child exits (the last cell done), else after half a second
            multiprocessing.connection.wait([p.sentinel for p in self.procs if getattr(p, "sentinel", None)],
                                            timeout=0.5)

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.handed_over:
            for p in self.procs:  # the sweep never started: they have touched nothing, no need to wait
                p.terminate()
                self.stopped.add(p.pid)
                try:
                    p.stdin.close()
                except OSError:
                    pass
        elif exc is not None:
            for p in self.procs:
                if not isinstance(exc, KeyboardInterrupt) and p.poll() is None:
                    p.send_signal(signal.SIGINT)  # stop them as a Ctrl-C would: save and release
        for p in self.procs:  # a Ctrl-C reached them too; give them a moment to save and release
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        errors = []
        for p, log in zip(self.procs, self.logs):
            log.seek(0)
            text = log.read().strip()
            log.close()
            if p.returncode not in (0, None) and p.pid not in self.stopped and text:
                errors.append(text)
        if errors and exc is None:
            raise DltricksError(f"a worker stopped with an error: {errors[0].splitlines()[-1]}")


def run(job: cells.Job, children: LocalWorkers, on_cell: Callable[[], None]) -> None:
    """Work on the study in this process beside the children (unless they do it all), then wait for them."""
    if not children.coordinating:
        cells.work(job, threads=children.threads, on_cell=on_cell)
        if children.running():
            # Nothing left to claim, the others finish their last cells: load what the report needs now
            # rather than after them.
            load_report_modules()
    children.wait(job, on_cell)


def run_workers(ledger: Ledger, name: str, children: LocalWorkers | int, progress: bool, opener: Opener) -> None:
    """This process and the children work through the cells of study ``name``, with one progress bar.

    This process works too (unless the children coordinate it): it has imported torch already, and the
    children warmed up while it defined the study. The cores are split between the processes.
    ``children`` may be a number of workers for a study that already exists (they start here)."""
    if isinstance(children, int):
        processes, threads = plan(children)
        with LocalWorkers(processes - 1, threads, opener) as started:
            started.hand_over(ledger, name)
            return run_workers(ledger, name, started, progress, opener)
    job = opener(ledger, name)
    with Progress(progress, job) as bar:
        run(job, children, on_cell=bar.refresh)
        if children.procs:  # a worker that died leaves a stale claim: take it over here
            cells.work(job, threads=children.threads, on_cell=bar.refresh)
        bar.refresh()


def receive() -> tuple[Ledger, str] | None:
    """In a `dltricks worker --study -` child: warm up (:func:`warm_up`), then read the study from stdin.
    Returns the ledger and the study's name, or None when the parent closed stdin without one (the
    sweep was never started)."""
    warm_up()
    return _job(sys.stdin.readline())


def _job(line: str) -> tuple[Ledger, str] | None:
    if not line.strip():
        return None
    job = json.loads(line)
    if job.get("checked"):
        st.CHECKED.add(job["url"])
    return Ledger(url=job["url"], root=job["home"]), job["study"]
