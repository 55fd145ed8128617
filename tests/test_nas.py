"""dltricks nas: the architecture space from the model's keys, budgets checked before training,
evolution and REINFORCE against random on a synthetic objective, and a tiny real search end to end."""

from __future__ import annotations

import random
import statistics

import pytest
from optuna.trial import create_trial
from sweeps import as_cli, overrides, small_recipe

from dltricks.cli import main as cli_main
from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.recipe import Recipe
from dltricks.search import definition as sd
from dltricks.search import nas as ns
from dltricks.search.definition import SearchDefinition
from dltricks.search.space import Dim, default_nas_space, distributions, to_params

SMALL = overrides(epochs=1)


def small(*more: str) -> Recipe:
    return small_recipe(*more, epochs=1)


# ---- strategies on a synthetic objective (no training) ----------------------------------------------------

DIMS = [Dim(f"k{i}", "categorical", choices=tuple(range(4))) for i in range(6)]
TARGET = {f"k{i}": (3 * i) % 4 for i in range(6)}


def matches(c: dict) -> float:
    """How many keys hit the hidden target (0..6), plus a little noise as training would add."""
    return sum(c[k] == v for k, v in TARGET.items()) + random.Random(str(sorted(c.items()))).gauss(0, 0.1)


def simulate(strategy: str, seed: int, n: int = 40) -> float:
    d = SearchDefinition(name="sim", kind="nas", recipe={}, space=[x.to_json() for x in DIMS], n_trials=n, seeds=[0],
                         objectives=["score"], directions=["maximize"], strategy=strategy, search_seed=seed,
                         population=8, sample_size=3)
    history = []
    for k in range(n):
        config = ns.propose(d, history, k)
        history.append(create_trial(value=matches(config), params=to_params(DIMS, config),
                                    distributions=distributions(DIMS), user_attrs={"cell": f"t{k}", "config": config}))
    return max(t.value for t in history)


def test_evolution_and_reinforce_beat_random_search():
    best = {s: statistics.mean(simulate(s, seed) for seed in range(6)) for s in ("random", "evolution", "reinforce")}
    assert best["evolution"] > best["random"] and best["reinforce"] > best["random"], best


def test_reinforce_controller_moves_towards_rewarded_choices():
    c = ns.Controller(DIMS[:1])
    for _ in range(10):
        c.update({"k0": 2}, 1.0)
        c.update({"k0": 1}, 0.0)
    p = c.probs(0)
    assert p[2] == max(p) and p[2] > 0.5 and p[1] < 0.25


# ---- the space and the budget --------------------------------------------------------------------------

def test_default_space_comes_from_the_models_keys():
    keys = {d.key for d in default_nas_space(small())}
    assert {"model.channels", "model.kernel_size", "model.stack_3x3", "model.norm", "model.residual", "model.se",
            "model.attention", "model.dilation", "model.downsample", "model.separable"} <= keys
    assert {d.key for d in default_nas_space(Recipe.load("mnist1d-mlp"))} >= {"model.hidden", "model.norm"}
    channels = next(d for d in default_nas_space(small()) if d.key == "model.channels")
    assert [8, 16] in channels.choices and len({len(c) for c in channels.choices}) == 4  # depth 1-4


def test_budget_no_candidate_meets_is_refused_before_training(ledger_home, capsys):
    with pytest.raises(DltricksError, match="no candidate meets the budget \\(--max-params 10\\)"):
        ns.define(small(), max_params=10)
    assert cli_main(["nas", "mnist1d-cnn", *as_cli(SMALL), "--max-flops", "5", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no candidate meets the budget" in err and "\n" not in err
    with pytest.raises(DltricksError, match="float range"):
        ns.define(small(), strategy="reinforce", space=["model.dropout=0.0..0.5"])
    with pytest.raises(DltricksError, match="unknown strategy 'evolutoin' \\(did you mean evolution\\?\\)"):
        ns.define(small(), strategy="evolutoin")


def test_every_proposal_is_within_budget():
    d = ns.define(small(), max_params=3000, trials=6)
    base = Recipe.from_dict(d.recipe)
    for k in range(6):
        config = ns.propose(d, [], k)
        assert sd.measure(base.patch(config), d)["params"] <= 3000


# ---- a real search ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_nas_end_to_end(ledger_home, capsys):
    args = ["nas", "mnist1d-cnn", *as_cli(SMALL), "--strategy", "evolution", "--trials", "4",
            "--space", "model.channels=[[8], [8, 16], [16, 32]]", "--space", "model.kernel_size=[3, 5]",
            "--space", "model.se=[false, true]", "--max-params", "8000", "--rerun-seeds", "2",
            "--best", "arch.toml", "--study", "arch", "--quiet"]
    assert cli_main(args) == 0
    text = capsys.readouterr().out
    assert "re-run on 2 fresh seeds" in text and "best recipe: arch.toml" in text
    ledger = Ledger()
    study, d = sd.load(ledger, "arch")
    done = sd.finished(study)
    assert len(study.trials) == 4 and [t.user_attrs["cell"] for t in done] == ["t0", "t1", "t2", "t3"]
    for t in done:  # counted before training, and within budget
        assert t.user_attrs["cost"]["params"] <= 8000 and t.user_attrs["cost"]["flops"] > 0
        assert ledger.get(t.user_attrs["run_ids"][0]).metrics["params"] == t.user_attrs["cost"]["params"]
    best = max(done, key=lambda t: t.value)
    recipe = Recipe.load("arch.toml")
    assert recipe.get("model.channels") == best.user_attrs["config"]["model.channels"]
    from dltricks.runner.run import train

    assert train(recipe, ledger=ledger, progress=False).status == "completed"
    assert (ledger_home / "reports" / "arch" / "front.png").exists()  # accuracy against FLOPs
