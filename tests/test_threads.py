"""train.threads: "auto" (the default) resolves to a thread count within [1, free cores], timed on the model
itself and cached; a number is used as given; anything else is refused with one line. A run records the
count it used and leaves the caller's setting as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dltricks import cores
from dltricks.errors import DltricksError
from dltricks.loop import threads as th
from dltricks.recipe import Recipe


def test_recipe_accepts_auto_and_numbers_and_refuses_the_rest() -> None:
    assert Recipe.load("mnist1d-mlp").train.threads == "auto"  # the default
    assert Recipe.load("mnist1d-mlp", ["train.threads=3"]).train.threads == 3
    assert Recipe.load("mnist1d-mlp", ["train.threads='auto'"]).train.threads == "auto"
    for bad in ("0", "-1", "'many'", "true", "1.5"):
        with pytest.raises(DltricksError) as e:
            Recipe.load("mnist1d-mlp", [f"train.threads={bad}"])
        msg = str(e.value)
        assert "\n" not in msg and "train.threads" in msg and "'auto' or a whole number >= 1" in msg


def test_free_cores_are_within_the_affinity() -> None:
    free = cores.free_cores(sample_s=0.05)
    assert 1 <= free <= cores.allowed_cores()
    assert th.candidates(1) == [1] and th.candidates(6) == [1, 2, 4, 6] and th.candidates(4) == [1, 2, 4]


def test_a_recent_look_at_the_cores_saves_the_wait_and_leaves_out_this_process(monkeypatch) -> None:
    """busy_cores() measures over the window since its last look when that is recent enough: no sleep, and
    the CPU this process used meanwhile (a cell it trained) is not counted as another process's."""
    clock = {"t": 100.0, "cpu": 10.0}
    jiffies = {"busy": 0.0, "total": 0.0}
    monkeypatch.setattr(cores.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(cores, "_cpu_times", lambda: (jiffies["busy"], jiffies["total"]))
    monkeypatch.setattr(cores.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(cores.time, "process_time", lambda: clock["cpu"])
    slept = []

    def sleep(s: float) -> None:
        slept.append(s)
        clock["t"] += s
        jiffies["busy"] += 100 * s * 0.5  # 2 cores x 100 jiffies/s, one of them busy
        jiffies["total"] += 200 * s

    monkeypatch.setattr(cores.time, "sleep", sleep)
    monkeypatch.setattr(cores, "_last_look", None)
    assert cores.busy_cores() == pytest.approx(0.5) and slept == [cores.SAMPLE_S]  # nothing earlier: it waits
    # 4 s later: both cores were busy, one of them with this process (4 CPU seconds)
    clock["t"] += 4.0
    clock["cpu"] += 4.0
    jiffies["busy"] += 200 * 4.0
    jiffies["total"] += 200 * 4.0
    assert cores.busy_cores() == pytest.approx(1.0) and len(slept) == 1  # no new wait
    clock["t"] += cores.REUSE_S + 1  # too old to stand for now: it waits again
    jiffies["total"] += 200 * (cores.REUSE_S + 1)
    cores.busy_cores()
    assert len(slept) == 2


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv1d(1, 8, 3, padding=1), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2),
                         nn.Flatten(), nn.Linear(8 * 40, 10))


def test_auto_times_the_model_and_picks_a_count_within_free_cores(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(th, "allowed_cores", lambda: 2)
    monkeypatch.setattr(th, "free_cores", lambda sample_s=cores.SAMPLE_S: 2)
    model, x = _net(), torch.randn(16, 1, 40)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    before, rng = torch.get_num_threads(), torch.get_rng_state()
    timed = []
    real = th.fastest

    def spy(step, counts, budget_s=th.STEP_BUDGET_S):
        timed.append(counts)
        return real(step, counts, budget_s=0.01)

    monkeypatch.setattr(th, "fastest", spy)
    cache = tmp_path / "threads.json"
    n = th.resolve("auto", model=model, batch=x, device=torch.device("cpu"), cap=4, cache=cache, key={"m": 1})
    assert isinstance(n, int) and 1 <= n <= 2 and timed == [[1, 2]]
    # the run is not disturbed: its weights, BatchNorm statistics, thread setting and random stream
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert torch.get_num_threads() == before and torch.equal(torch.get_rng_state(), rng)
    # measured once per model and host: the second run reads the cache
    assert th.resolve("auto", model=model, batch=x, device=torch.device("cpu"), cap=4, cache=cache,
                      key={"m": 1}) == n and len(timed) == 1
    th.resolve("auto", model=model, batch=x, device=torch.device("cpu"), cap=4, cache=cache, key={"m": 2})
    assert len(timed) == 2  # another model is timed again
    # one free core, or a cap of one: nothing to time
    monkeypatch.setattr(th, "free_cores", lambda sample_s=cores.SAMPLE_S: 1)
    assert th.resolve("auto", model=model, batch=x, device=torch.device("cpu"), cap=4) == 1
    assert th.resolve("auto", model=model, batch=x, device=torch.device("cpu"), cap=1) == 1
    assert th.resolve(3, model=model, batch=x, device=torch.device("cpu"), cap=1) == 3  # a number is a number
    assert len(timed) == 2


def test_fastest_reports_each_count() -> None:
    best, per_step = th.fastest(lambda: torch.randn(64, 64).matmul(torch.randn(64, 64)), [1, 2], budget_s=0.01)
    assert best in (1, 2) and set(per_step) == {1, 2} and all(t > 0 for t in per_step.values())


def test_a_run_records_its_threads_and_restores_the_callers(ledger_home) -> None:
    from dltricks.runner.run import train

    base = ["data.num_samples=400", "train.epochs=1", "model.hidden=[16]"]
    torch.set_num_threads(1)
    r = train(Recipe.load("mnist1d-mlp", [*base, "train.threads=2"]), progress=False)
    assert r.metrics["threads"] == 2.0 and torch.get_num_threads() == 1
    r = train(Recipe.load("mnist1d-mlp", base), progress=False)  # auto, capped by the caller's 1 thread
    assert r.metrics["threads"] == 1.0 and torch.get_num_threads() == 1
