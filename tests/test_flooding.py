"""Flooding, the architecture page's worked example of a learning set-up: one file in methods/, one trick."""

from __future__ import annotations

import torch

from dltricks.ledger import Ledger
from dltricks.loop.method import Batch, Method
from dltricks.loop.tasks import Classification
from dltricks.methods.flooding import Flooded
from dltricks.recipe import Recipe
from dltricks.runner import train
from dltricks.tricks.catalogue import get

TINY = ["data.num_samples=400", "train.epochs=6", "model.name=mlp", "train.schedule=constant", "train.lr=0.01"]


def test_the_flooded_loss_is_reflected_below_the_level():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    batch = Batch(torch.randn(8, 4), torch.randint(0, 3, (8,)))
    plain, _ = Method(Classification()).loss(model, batch, 0.0)
    for level in (0.0, plain.item() / 2, plain.item() * 2):
        flooded, _ = Flooded(Method(Classification()), level).loss(model, batch, 0.0)
        assert torch.isclose(flooded, (plain - level).abs() + level)


def test_a_level_above_the_loss_makes_training_climb(ledger_home):
    """Descent lowers the training loss; flooded at a level b no loss reaches, the same run climbs: the
    recorded (flooded) loss 2b - loss falls, and the model ends far worse on the test set."""
    recipe = Recipe.load("mnist1d-mlp", TINY)
    plain = train(recipe, ledger=Ledger(), progress=False)
    flooded = train(recipe.patch({"train.flood_level": 50.0}), ledger=Ledger(), progress=False)
    assert plain.history["train_loss"][-1] < plain.history["train_loss"][0]
    assert flooded.history["train_loss"][-1] < flooded.history["train_loss"][0] - 1.0
    assert flooded.metrics["test_loss"] > 2 * plain.metrics["test_loss"]


def test_flooding_is_a_catalogue_trick_that_patches_its_key():
    t = get("flooding")
    on = Recipe.load("mnist1d-mlp").patch(t.on)
    assert on.train.flood_level == t.on["train.flood_level"] > 0
    assert Recipe.load("mnist1d-mlp").patch(t.off).train.flood_level == 0.0
