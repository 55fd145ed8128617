"""The training loop: learning, determinism, optimisers, schedules, clipping, early stopping, NaN,
precision, data sources, and checkpoints that resume bit-for-bit after a real SIGINT."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import dltricks
from dltricks.errors import DltricksError, RunFailed
from dltricks.loop.optim import build_optimizer, param_groups
from dltricks.loop.schedules import build_scheduler
from dltricks.loop.tasks import Classification
from dltricks.loop.training import TrainingInterrupted, evaluate, fit
from dltricks.recipe import TrainSpec


def blobs(n=240, classes=3, dim=8, seed=0, scale=1.0):
    """Gaussian clusters around fixed random centres: easy, but not trivially so."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(99)) * 2.0
    y = torch.arange(n) % classes
    x = centres[y] + torch.randn(n, dim, generator=g)
    return x * scale, y


def mlp(dim=8, classes=3, hidden=32, dropout=0.0, norm=False, seed=0):
    torch.manual_seed(seed)
    layers = [nn.Linear(dim, hidden)]
    if norm:
        layers.append(nn.BatchNorm1d(hidden))
    layers += [nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, classes)]
    return nn.Sequential(*layers)


FAST = dict(progress=False, device="cpu")


def weights_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---- learning and determinism ---------------------------------------------------------------------------

def test_fit_learns_well_above_chance():
    x, y = blobs(300)
    xt, yt = blobs(150, seed=1)
    model = mlp()
    h = dltricks.fit(model, (x, y), (xt, yt), epochs=8, batch_size=32, lr=1e-2, **FAST)
    assert h.epochs == 8 and len(h["train_loss"]) == 8 and len(h["val_accuracy"]) == 8
    assert h["train_loss"][-1] < h["train_loss"][0] / 2
    m = evaluate(model, (xt, yt), device="cpu")
    assert m["accuracy"] > 0.9  # chance is 1/3
    assert m["accuracy"] == pytest.approx(h["val_accuracy"][-1])
    assert set(m) == {"loss", "accuracy", "ece"} and 0.0 <= m["ece"] <= 1.0


def test_evaluate_counts_every_sample():
    # 257 = 256 + 1: a last batch of one sample must be scored (training alone folds it away)
    x, y = blobs(257)
    model = mlp()
    model.eval()
    with torch.no_grad():
        expected = (model(x).argmax(1) == y).float().mean().item()
    assert evaluate(model, (x, y), batch_size=256, device="cpu")["accuracy"] == pytest.approx(expected)


def test_same_seed_bit_identical_different_seed_differs():
    x, y = blobs(200)
    val = blobs(60, seed=1)
    runs = []
    for seed in (0, 0, 1):
        model = mlp(dropout=0.2)  # the init is fixed here; fit's seed fixes data order and dropout
        h = fit(model, (x, y), val, epochs=3, batch_size=16, lr=1e-2, seed=seed, schedule="cosine", **FAST)
        runs.append((h, model))
    (h0, m0), (h1, m1), (h2, m2) = runs
    assert h0.curves == h1.curves and weights_equal(m0, m1)
    assert h0.curves["train_loss"] != h2.curves["train_loss"] and not weights_equal(m0, m2)


# ---- optimisers and schedules -----------------------------------------------------------------------------

@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.05), ("adam", 1e-2), ("adamw", 1e-2), ("rmsprop", 1e-3)])
def test_each_optimizer_trains(optimizer, lr):
    x, y = blobs(160)
    model = mlp()
    h = fit(model, (x, y), epochs=4, batch_size=16, lr=lr, optimizer=optimizer, weight_decay=1e-4,
            nesterov=True, **FAST)
    assert h["train_loss"][-1] < h["train_loss"][0]
    kind = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
            "rmsprop": torch.optim.RMSprop}[optimizer]
    assert isinstance(build_optimizer(model, TrainSpec(optimizer=optimizer)), kind)


def lr_per_step(steps_per_epoch=10, **cfg):
    """The learning rate each optimiser step uses, over the whole run."""
    spec = TrainSpec(**cfg)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=spec.lr)
    sched = build_scheduler(opt, spec, steps_per_epoch)
    out = []
    for _ in range(spec.epochs * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return out


def test_constant_schedule():
    assert set(lr_per_step(epochs=3, lr=0.1)) == {0.1}


def test_cosine_decreases_to_min_lr():
    lrs = lr_per_step(epochs=5, lr=0.1, schedule="cosine", min_lr=0.01)
    assert lrs[0] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] == pytest.approx(0.01, abs=2e-4)  # one step short of the floor
    assert lrs[25] == pytest.approx(0.01 + 0.09 * 0.5, rel=1e-6)  # half way: the cosine's midpoint


def test_step_drops_by_gamma_at_step_size():
    lrs = lr_per_step(epochs=6, lr=0.1, schedule="step", step_size=2, gamma=0.5)
    for s, lr in enumerate(lrs):
        assert lr == pytest.approx(0.1 * 0.5 ** (s // 20)), s


def test_multistep_and_exponential():
    lrs = lr_per_step(epochs=6, lr=0.1, schedule="multistep", milestones=[1, 4], gamma=0.1)
    assert lrs[9] == pytest.approx(0.1) and lrs[10] == pytest.approx(0.01) and lrs[40] == pytest.approx(0.001)
    lrs = lr_per_step(epochs=3, lr=0.1, schedule="exponential", gamma=0.5)
    assert lrs[10] == pytest.approx(0.05) and lrs[20] == pytest.approx(0.025)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_one_cycle_rises_then_falls():
    lrs = lr_per_step(epochs=10, lr=0.1, schedule="one_cycle")
    peak = max(range(len(lrs)), key=lrs.__getitem__)
    assert 0.25 * len(lrs) <= peak <= 0.35 * len(lrs)  # the usual 30% warm-up
    assert lrs[peak] == pytest.approx(0.1, rel=1e-3)
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:]))
    assert lrs[0] < 0.1 / 10 and lrs[-1] < lrs[0]


def test_warmup_rises_linearly_then_follows_the_schedule():
    lrs = lr_per_step(epochs=5, lr=0.1, warmup_epochs=2)
    ramp = lrs[:21]
    steps = [b - a for a, b in zip(ramp, ramp[1:])]
    assert all(d == pytest.approx(steps[0], rel=1e-6) for d in steps) and steps[0] > 0
    assert lrs[0] == pytest.approx(0.001) and lrs[20] == pytest.approx(0.1)
    assert set(round(v, 12) for v in lrs[20:]) == {0.1}
    cos = lr_per_step(epochs=5, lr=0.1, warmup_epochs=1, schedule="cosine")
    assert cos[10] == pytest.approx(0.1) and all(a >= b for a, b in zip(cos[10:], cos[11:]))
    step = lr_per_step(epochs=5, lr=0.1, warmup_epochs=1, schedule="step", step_size=2, gamma=0.1)
    assert step[10] == pytest.approx(0.1) and step[-1] < 0.1
    multi = lr_per_step(epochs=5, lr=0.1, warmup_epochs=1, schedule="multistep", milestones=[3], gamma=0.1)
    assert multi[29] == pytest.approx(0.1) and multi[30] == pytest.approx(0.01)  # decays at epoch 3 as asked


@pytest.mark.parametrize("schedule", ["constant", "step", "multistep", "exponential", "cosine", "one_cycle"])
def test_each_schedule_runs_in_fit(schedule):
    x, y = blobs(64)
    h = fit(mlp(), (x, y), epochs=3, batch_size=16, lr=1e-2, schedule=schedule, milestones=[1], step_size=1,
            gamma=0.5, warmup_epochs=1 if schedule != "one_cycle" else 0, **FAST)
    assert len(h["lr"]) == 3 and all(v >= 0 for v in h["lr"])
    if schedule in ("cosine", "one_cycle", "step", "exponential"):
        assert h["lr"][-1] < h["lr"][0]


# ---- weight decay, clipping, label smoothing --------------------------------------------------------------

def test_weight_decay_spares_norm_and_bias():
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.GroupNorm(2, 4), nn.Flatten(),
                          nn.LayerNorm(24), nn.Linear(24, 3))
    groups = param_groups(model, 0.1, decay_norm_and_bias=False)
    decay = {id(p) for p in groups[0]["params"]}
    exempt = {id(p) for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert decay == {id(model[0].weight), id(model[5].weight)}
    assert exempt == {id(p) for p in model.parameters()} - decay
    opt = build_optimizer(model, TrainSpec(weight_decay=0.1))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    everything = build_optimizer(model, TrainSpec(weight_decay=0.1, decay_norm_and_bias=True))
    assert len(everything.param_groups) == 1 and everything.param_groups[0]["weight_decay"] == 0.1
    assert len(everything.param_groups[0]["params"]) == len(list(model.parameters()))


def test_weight_decay_acts_only_on_decayed_params():
    # one SGD step with and without decay: weights differ by exactly the decay, norm and bias not at all
    x, y = blobs(32)
    plain, decayed = mlp(norm=True), mlp(norm=True)
    w0 = plain[0].weight.detach().clone()
    kw = dict(epochs=1, batch_size=32, lr=0.1, optimizer="sgd", momentum=0.0, **FAST)
    fit(plain, (x, y), **kw)
    fit(decayed, (x, y), weight_decay=0.5, **kw)
    assert torch.allclose(decayed[0].weight, plain[0].weight - 0.1 * 0.5 * w0, atol=1e-6)
    assert not torch.equal(decayed[4].weight, plain[4].weight)
    for name in ("0.bias", "1.weight", "1.bias", "4.bias"):
        assert torch.equal(decayed.state_dict()[name], plain.state_dict()[name]), name


@pytest.fixture
def grads_before_step():
    """The gradients each optimiser step is about to apply (after clipping), from a global pre-step hook."""
    seen: list[list[torch.Tensor]] = []

    def hook(opt, args, kwargs):
        seen.append([p.grad.detach().clone() for g in opt.param_groups for p in g["params"] if p.grad is not None])

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(hook)
    yield seen
    handle.remove()


def _norm(gs):
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in gs])).item()


def test_grad_clip_norm_bounds_the_gradient(grads_before_step):
    x, y = blobs(64, scale=20.0)  # large inputs: large gradients
    fit(mlp(), (x, y), epochs=1, batch_size=16, lr=1e-3, **FAST)
    unclipped = [_norm(g) for g in grads_before_step]
    assert max(unclipped) > 1.0
    grads_before_step.clear()
    fit(mlp(), (x, y), epochs=1, batch_size=16, lr=1e-3, grad_clip=0.5, grad_clip_mode="norm", **FAST)
    norms = [_norm(g) for g in grads_before_step]
    assert len(norms) == 4 and max(norms) <= 0.5 * (1 + 1e-5)
    assert min(norms) > 0.45  # clipped to the bound, not zeroed


def test_grad_clip_value_bounds_each_entry(grads_before_step):
    x, y = blobs(64, scale=20.0)
    fit(mlp(), (x, y), epochs=1, batch_size=16, lr=1e-3, grad_clip=0.01, grad_clip_mode="value", **FAST)
    biggest = max(g.abs().max().item() for step in grads_before_step for g in step)
    assert biggest == pytest.approx(0.01)


def test_label_smoothing_changes_the_loss():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    y = torch.tensor([0, 1])
    plain, smooth = Classification().loss(logits, y), Classification(label_smoothing=0.1).loss(logits, y)
    assert smooth > plain
    x, yy = blobs(64)
    a = fit(mlp(), (x, yy), epochs=2, batch_size=16, lr=1e-2, **FAST)
    b = fit(mlp(), (x, yy), epochs=2, batch_size=16, lr=1e-2, label_smoothing=0.1, **FAST)
    assert a["train_loss"] != b["train_loss"]


# ---- early stopping ------------------------------------------------------------------------------

def test_early_stopping_stops_and_restores_the_best_weights():
    x, y = blobs(120)
    xv, yv = blobs(60, seed=1)
    yv = (yv + 1) % 3  # validation disagrees with training: the better it fits, the worse val gets
    model = mlp()
    snapshots = {}

    def keep(epoch, row):
        snapshots[epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    h = fit(model, (x, y), (xv, yv), epochs=20, batch_size=16, lr=1e-2, early_stopping=2, on_epoch=keep, **FAST)
    assert h.stopped_early and h.epochs < 20
    best = h.best_epoch
    assert h["val_loss"][best - 1] == min(h["val_loss"])
    assert h.epochs == best + 2
    assert all(torch.equal(v, snapshots[best][k]) for k, v in model.state_dict().items())
    assert not all(torch.equal(v, snapshots[h.epochs][k]) for k, v in model.state_dict().items())
    assert evaluate(model, (xv, yv), device="cpu")["loss"] == pytest.approx(h["val_loss"][best - 1], rel=1e-5)


def test_early_stopping_on_accuracy_monitor_and_without_restore():
    x, y = blobs(120)
    xv, yv = blobs(60, seed=1)
    model = mlp()
    h = fit(model, (x, y), (xv, yv), epochs=4, batch_size=16, lr=1e-2, early_stopping=10,
            monitor="val_accuracy", restore_best=False, **FAST)
    assert not h.stopped_early and h.epochs == 4
    assert h["val_accuracy"][h.best_epoch - 1] == max(h["val_accuracy"])


# ---- failures -----------------------------------------------------------------------------------

class NaNAt(nn.Module):
    """A model that returns NaN from its n-th training forward on."""

    def __init__(self, inner: nn.Module, at: int):
        super().__init__()
        self.inner, self.at, self.calls = inner, at, 0

    def forward(self, x):
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.at:
                out = out * float("nan")
        return out


def test_nan_loss_raises_run_failed_with_step_and_hint():
    x, y = blobs(64)
    with pytest.raises(RunFailed) as e:
        fit(NaNAt(mlp(), 6), (x, y), epochs=3, batch_size=16, lr=1e-2, **FAST)
    msg = str(e.value)
    assert "epoch 2, step 2" in msg and "train.lr" in msg and "grad_clip" in msg and "\n" not in msg
    assert e.value.exit_code == 1


def test_diverging_sgd_fails_and_the_ledger_says_why(ledger_home, monkeypatch):
    from dltricks.ledger import Ledger
    from dltricks.recipe import Recipe
    from dltricks.runner.run import train

    monkeypatch.setenv("DLTRICKS_CACHE", str(ledger_home / "cache"))
    recipe = Recipe.load("mnist1d-mlp", ["data.num_samples=200", "train.optimizer=sgd", "train.lr=1e6",
                                         "train.epochs=2", "train.schedule=constant"])
    ledger = Ledger()
    with pytest.raises(RunFailed, match="NaN|diverged"):
        train(recipe, ledger=ledger, progress=False)
    (run,) = ledger.runs()
    assert run.status == "failed" and ("NaN/Inf at epoch" in run.failure or "diverged to" in run.failure)
    assert "step" in run.failure
    assert "train.lr" in run.failure
    assert run.finished is not None


def test_problems_found_before_the_first_step_record_no_run(ledger_home, monkeypatch, tmp_path):
    """Issue 20.5: unreadable data, shapes that do not fit and a recipe a method refuses leave the ledger
    empty (each once added a `failed` row); the same ledger then records a good run as usual."""
    import numpy as np

    from dltricks.ledger import Ledger
    from dltricks.nn import register_model
    from dltricks.recipe import ModelSpec, Recipe
    from dltricks.runner.run import train

    class WrongWidthSpec(ModelSpec):
        name: str = "test_wrong_width"

    # a model that builds but whose first layer does not take the data's width (fails on its first step)
    register_model("test_wrong_width", WrongWidthSpec)(lambda spec, in_shape, k: nn.Sequential(nn.Flatten(),
                                                                                               nn.Linear(7, k)))
    monkeypatch.setenv("DLTRICKS_CACHE", str(ledger_home / "cache"))
    (tmp_path / "bad.csv").write_bytes(b"a,label\n1,x\n\xff\xfe,\x00\n")
    (tmp_path / "bad.npz").write_bytes(b"not a zip archive")
    np.savez(tmp_path / "short.npz", x=np.zeros((10, 5), np.float32), y=np.zeros(7, np.int64))
    ledger = Ledger()
    bad = [Recipe.load("mnist1d-mlp", [f"data={{name='csv', path='{tmp_path / 'bad.csv'}'}}"]),
           Recipe.load("mnist1d-mlp", [f"data={{name='npz', path='{tmp_path / 'bad.npz'}'}}"]),
           Recipe.load("mnist1d-mlp", [f"data={{name='npz', path='{tmp_path / 'short.npz'}'}}"]),
           Recipe.load("mnist1d-mlp", ["data.num_samples=200", "train.domain_adaptation='dann'"]),
           Recipe.load("mnist1d-mlp", ["data.num_samples=200", "model={name='test_wrong_width'}"])]
    for recipe, why in zip(bad, ["bad.csv", "bad.npz", "short.npz", "needs a target domain",
                                       "'test_wrong_width' cannot run on input \\(1, 40\\)"]):
        with pytest.raises(DltricksError, match=why):
            train(recipe, ledger=ledger, progress=False)
    assert ledger.runs() == []
    good = train(Recipe.load("mnist1d-mlp", ["data.num_samples=200", "train.epochs=1"]), ledger=ledger,
                 progress=False)
    assert [r.id for r in ledger.runs()] == [good.run_id] and good.status == "completed"


def test_bad_options_are_one_line_errors():
    x, y = blobs(32)
    with pytest.raises(DltricksError, match="unknown key weight_decai.*did you mean weight_decay"):
        fit(mlp(), (x, y), epochs=1, batch_size=8, lr=1e-2, weight_decai=0.1, **FAST)
    with pytest.raises(DltricksError, match="epochs = 0"):
        fit(mlp(), (x, y), epochs=0, batch_size=8, lr=1e-2, **FAST)
    with pytest.raises(DltricksError, match="32 samples but y has 31"):
        fit(mlp(), (x, y[:31]), epochs=1, batch_size=8, lr=1e-2, **FAST)
    with pytest.raises(DltricksError, match="fp16"):
        fit(mlp(), (x, y), epochs=1, batch_size=8, lr=1e-2, precision="fp16", **FAST)


# ---- precision and data sources -------------------------------------------------------------------------

def test_bf16_on_cpu_trains():
    x, y = blobs(160)
    model = mlp()
    h = fit(model, (x, y), (x, y), epochs=4, batch_size=16, lr=1e-2, precision="bf16", **FAST)
    assert all(torch.isfinite(torch.tensor(h["train_loss"])))
    assert h["val_accuracy"][-1] > 0.8
    assert model[0].weight.dtype == torch.float32  # autocast computes in bf16; weights stay fp32


def test_dataset_input_matches_tensor_input_and_dataloader_works():
    x, y = blobs(100)
    a, b = mlp(), mlp()
    ha = fit(a, (x, y), epochs=2, batch_size=16, lr=1e-2, **FAST)
    hb = fit(b, TensorDataset(x, y), epochs=2, batch_size=16, lr=1e-2, **FAST)
    assert ha.curves == hb.curves and weights_equal(a, b)  # same seeded order, same batches
    runs = []
    for _ in range(2):
        m = mlp()
        loader = DataLoader(TensorDataset(x, y), batch_size=10, shuffle=True)
        runs.append((fit(m, loader, DataLoader(TensorDataset(x, y), batch_size=50), epochs=3, batch_size=10,
                         lr=1e-2, **FAST), m))
    (h1, m1), (h2, m2) = runs
    assert h1.curves == h2.curves and weights_equal(m1, m2)
    assert h1["val_accuracy"][-1] > 0.8


# ---- checkpoints and resume -----------------------------------------------------------------------------

class InterruptAt(nn.Module):
    """Sends this process a real SIGINT from inside its n-th training forward (0 = never)."""

    def __init__(self, inner: nn.Module, at: int = 0):
        super().__init__()
        self.inner, self.at, self.calls = inner, at, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                os.kill(os.getpid(), signal.SIGINT)
        return self.inner(x)


RESUME_KW = dict(epochs=4, batch_size=16, lr=1e-2, schedule="one_cycle", weight_decay=1e-3, **FAST)


def _train_source(kind, x, y):
    if kind == "dataloader":
        return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    return (x, y)


@pytest.mark.parametrize("kind, at", [("tensors", 11), ("tensors", 8), ("dataloader", 11)])
def test_sigint_then_resume_is_bit_identical(tmp_path, kind, at):
    # 120 samples / 16 = 8 steps an epoch (the last has 8): at=11 is mid-epoch 2, at=8 the epoch's end
    x, y = blobs(120)
    val = blobs(40, seed=1)
    full = InterruptAt(mlp(dropout=0.3))
    h_full = fit(full, _train_source(kind, x, y), val, checkpoint_dir=tmp_path / "a", **RESUME_KW)

    model = InterruptAt(mlp(dropout=0.3), at=at)
    with pytest.raises(TrainingInterrupted) as e:
        fit(model, _train_source(kind, x, y), val, checkpoint_dir=tmp_path / "b", **RESUME_KW)
    assert e.value.checkpoint == tmp_path / "b" / "checkpoint"
    state = json.loads((e.value.checkpoint / "state.json").read_text())
    assert (state["loop"]["epoch"], state["loop"]["step"]) == divmod(at, 8)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back

    fresh = InterruptAt(mlp(dropout=0.3, seed=5))  # other initial weights: all must come from the checkpoint
    h = fit(fresh, _train_source(kind, x, y), val, checkpoint_dir=tmp_path / "b", resume=True, **RESUME_KW)
    assert h.curves == h_full.curves
    assert weights_equal(fresh, full)


def test_checkpoints_hold_no_pickle_and_corruption_is_one_line(tmp_path):
    x, y = blobs(64)
    kw = dict(epochs=2, batch_size=16, lr=1e-2, early_stopping=3, **FAST)
    fit(mlp(), (x, y), (x, y), checkpoint_dir=tmp_path, **kw)
    ckpt = tmp_path / "checkpoint"
    files = sorted(p.name for p in ckpt.iterdir())
    assert files == ["best.safetensors", "model.safetensors", "state.json", "state.safetensors"]
    for p in ckpt.iterdir():
        assert not p.read_bytes().startswith(b"\x80"), f"{p.name} looks like a pickle"
    assert not list(tmp_path.glob("checkpoint.*"))  # no temporary or old copies left behind

    # resuming a finished run changes nothing
    again = mlp(seed=3)
    h = fit(again, (x, y), (x, y), checkpoint_dir=tmp_path, resume=True, **kw)
    assert h.epochs == 2

    (ckpt / "model.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(DltricksError) as e:
        fit(mlp(), (x, y), (x, y), checkpoint_dir=tmp_path, resume=True, **kw)
    assert "corrupt" in str(e.value) and "\n" not in str(e.value)

    (ckpt / "state.json").write_text('{"format": 1, "loop": ')
    with pytest.raises(DltricksError, match="corrupt"):
        fit(mlp(), (x, y), (x, y), checkpoint_dir=tmp_path, resume=True, **kw)

    with pytest.raises(DltricksError, match="nothing to resume"):
        fit(mlp(), (x, y), checkpoint_dir=tmp_path / "empty", resume=True, **kw)


def test_resume_with_another_recipe_is_refused(tmp_path):
    x, y = blobs(64)
    fit(mlp(), (x, y), epochs=1, batch_size=16, lr=1e-2, checkpoint_dir=tmp_path, fingerprint="aaa", **FAST)
    with pytest.raises(DltricksError, match="different recipe"):
        fit(mlp(), (x, y), epochs=2, batch_size=16, lr=1e-2, checkpoint_dir=tmp_path, fingerprint="bbb",
            resume=True, **FAST)


def test_fit_takes_a_train_spec_as_it_is_and_keywords_replace_its_keys():
    """The runner hands fit the recipe's train section itself: the same training as its keys given one by
    one; a keyword given beside it replaces that key (validated like a recipe's), the spec is left as it was."""
    x, y = blobs(120)
    spec = TrainSpec(epochs=2, batch_size=16, lr=1e-2, schedule="cosine", weight_decay=1e-3, device="cpu")
    a, b = mlp(), mlp()
    ha = fit(a, (x, y), (x, y), spec=spec, progress=False)
    hb = fit(b, (x, y), (x, y), epochs=2, batch_size=16, lr=1e-2, schedule="cosine", weight_decay=1e-3, **FAST)
    assert ha.curves == hb.curves and weights_equal(a, b)
    hc = fit(mlp(), (x, y), spec=spec, epochs=3, lr=1e-3, progress=False)
    assert hc.epochs == 3 and hc["lr"][0] < 1e-3 and spec.epochs == 2 and spec.lr == 1e-2
    with pytest.raises(DltricksError, match=r"^fit: .*epochs") as e:
        fit(mlp(), (x, y), spec=spec, epochs=0, progress=False)
    assert "\n" not in str(e.value)


def test_fit_fits_on_one_screen():
    """fit reads top to bottom; what it is made of has names (dltricks.loop.parts)."""
    import inspect

    assert len(inspect.getsource(fit).splitlines()) <= 80


def test_metric_direction_by_name():
    from dltricks.loop.tasks import higher_is_better

    assert higher_is_better("test_accuracy") and higher_is_better("val_dice") and higher_is_better("val_accuracy")
    for m in ("val_loss", "test_ece", "wall_time_s", "params", "test_hd95", "flops"):
        assert not higher_is_better(m), m


# ---- the public API keeps its names whatever was imported before ------------------------------------------

def readme_python_example() -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("### Python API"):]
    start = section.index("```python\n") + len("```python\n")
    return section[start:section.index("\n```", start)]


@pytest.mark.slow
def test_readme_python_example_runs_twice_in_one_interpreter(tmp_path):
    """`dltricks.train` stays the function after `dltricks.fit` (which imports the loop package)
    and after a first `dltricks.train(...)`. The README's cost is cut (a tiny recipe,
    one seed) but its calls, in its order, are the README's own."""
    import subprocess
    import sys
    import textwrap

    code = readme_python_example()
    assert "dltricks.fit(" in code and "dltricks.train(" in code and "dltricks.ablate(" in code
    cheap = (code.replace('Recipe.load("mnist1d-cnn")', 'Recipe.load("mnist1d-cnn", TINY)')
             .replace('dltricks.ablate("mnist1d-cnn"', 'dltricks.ablate(Recipe.load("mnist1d-cnn", TINY)')
             .replace("seeds=5, workers=2", "seeds=1, workers=1, progress=False"))
    tiny = ["data.num_samples=200", "train.epochs=1", "model.channels=[4]", "train.schedule=constant"]
    script = f"TINY = {tiny!r}\nfor _ in range(2):\n" + textwrap.indent(cheap, "    ") + textwrap.dedent("""
        from dltricks import train as from_import
        import dltricks.loop.training
        import dltricks.runner.run as run_module
        assert callable(dltricks.train) and callable(from_import) and callable(dltricks.fit)
        assert dltricks.loop.training.fit is dltricks.fit and run_module.train is dltricks.train
        print("ok", dltricks.train(Recipe.load("mnist1d-cnn", TINY), progress=False).status)
        """)
    env = {**os.environ, "DLTRICKS_HOME": str(tmp_path / "home"), "DLTRICKS_NO_PROGRESS": "1",
           "DLTRICKS_CACHE": str(tmp_path / "cache")}
    env.pop("DLTRICKS_LEDGER", None)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok completed"), done.stdout


def test_divergence_without_nan_fails_like_nan():
    """A loss that explodes but stays finite (adamw at lr 1e6: losses of 1e10 and more, chance accuracy)
    fails the run with the step and the same hints as a NaN, numbers printed readably."""
    x, y = blobs(64)
    with pytest.raises(RunFailed) as e:
        fit(mlp(), (x, y), epochs=3, batch_size=16, lr=1e6, **FAST)
    msg = str(e.value)
    assert "loss diverged to" in msg and "times its first value" in msg and "epoch 1, step" in msg
    assert "train.lr (now 1e+06)" in msg and "grad_clip" in msg and "e+" in msg and "\n" not in msg
    # a high but sane learning rate is not divergence
    fit(mlp(), (x, y), epochs=3, batch_size=16, lr=0.3, **FAST)


def test_a_device_this_machine_lacks_is_refused_before_training(ledger_home):
    from dltricks.ledger import Ledger
    from dltricks.loop.training import resolve_device
    from dltricks.recipe import Recipe
    from dltricks.runner.run import train

    if not torch.backends.mps.is_available():
        with pytest.raises(DltricksError, match="train.device = 'mps' but no Apple MPS device"):
            resolve_device("mps")
        ledger = Ledger()
        with pytest.raises(DltricksError, match="no Apple MPS device"):
            train(Recipe.load("mnist1d-mlp", ["train.device=mps"]), ledger=ledger, progress=False)
        assert ledger.runs() == []  # refused like a bad key: no run was started
    if not torch.cuda.is_available():
        with pytest.raises(DltricksError, match="no CUDA device"):
            resolve_device("cuda:1")
    else:
        with pytest.raises(DltricksError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_fit_takes_a_dataloader_without_batch_size_and_explains_float_labels():
    x, y = blobs(96)
    h = fit(mlp(), DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True), (x, y), epochs=2, lr=1e-2, **FAST)
    assert h.epochs == 2 and len(h["train_loss"]) == 2
    with pytest.raises(DltricksError, match="batch_size is needed for tensors"):
        fit(mlp(), (x, y), epochs=1, lr=1e-2, **FAST)
    with pytest.raises(DltricksError, match=r"labels are floats .*convert them with y.long\(\)") as e:
        fit(mlp(), (x, y.float()), epochs=1, batch_size=16, lr=1e-2, **FAST)
    assert "\n" not in str(e.value)
    with pytest.raises(DltricksError, match="labels are floats.*per sample.*class ids 0..K-1"):
        fit(mlp(), TensorDataset(x, y.float() + 0.5), epochs=1, batch_size=16, lr=1e-2, **FAST)
    soft = torch.nn.functional.one_hot(y, 3).float()  # class probabilities are fine
    assert fit(mlp(), (x, soft), epochs=1, batch_size=16, lr=1e-2, **FAST).epochs == 1


def test_the_interruption_says_where_it_stopped(tmp_path):
    x, y = blobs(120)  # 8 steps an epoch
    with pytest.raises(TrainingInterrupted) as e:
        fit(InterruptAt(mlp(), at=11), (x, y), checkpoint_dir=tmp_path, **RESUME_KW)
    assert (e.value.epoch, e.value.step) == (1, 3)
    assert e.value.where == "in epoch 2 of 4, after step 3 of 8" and str(e.value).endswith(e.value.where)
    with pytest.raises(TrainingInterrupted) as e:
        fit(InterruptAt(mlp(), at=8), (x, y), checkpoint_dir=tmp_path / "b", **RESUME_KW)
    assert e.value.where == "after epoch 1 of 4"


def test_a_completed_run_drops_its_resume_checkpoint_unless_asked(ledger_home, monkeypatch):
    from dltricks.ledger import Ledger
    from dltricks.recipe import Recipe
    from dltricks.runner.run import train

    monkeypatch.setenv("DLTRICKS_CACHE", str(ledger_home / "cache"))
    recipe = Recipe.load("mnist1d-mlp", ["data.num_samples=200", "train.epochs=1", "model.hidden=[16]"])
    ledger = Ledger()
    dropped = train(recipe, ledger=ledger, progress=False)
    assert (dropped.run_dir / "model.safetensors").is_file() and not list(dropped.run_dir.glob("checkpoint*"))
    kept = train(recipe, ledger=ledger, progress=False, keep_checkpoint=True)
    assert (kept.run_dir / "checkpoint" / "state.json").is_file()
    assert ledger.get(dropped.run_id).checkpoint == str(dropped.run_dir / "model.safetensors")


# ---- the bundled architecture recipes build and learn (their full figures: benchmarks/architectures.py) ----

@pytest.mark.parametrize("name", ["mnist1d-mlp", "mnist1d-gru", "mnist1d-transformer"])
def test_bundled_architecture_recipes_build_and_learn(name, ledger_home, monkeypatch):
    from dltricks.ledger import Ledger
    from dltricks.recipe import Recipe
    from dltricks.runner.run import train

    monkeypatch.setenv("DLTRICKS_CACHE", str(ledger_home / "cache"))
    recipe = Recipe.load(name, ["data.num_samples=1000", "train.epochs=3"])
    result = train(recipe, ledger=Ledger(), progress=False)
    assert result.recipe.name == name and result.metrics["epochs"] == 3
    curve = result.history["train_loss"]
    assert curve[-1] < curve[0] and result.metrics["test_accuracy"] > 0.2, result.metrics  # chance is 0.1
