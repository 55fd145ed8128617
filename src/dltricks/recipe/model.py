"""``[model]``: keys every model has; a model's own schema subclasses :class:`ModelSpec`."""

from __future__ import annotations

from pydantic import Field

from dltricks.recipe.section import Section


class ModelSpec(Section):
    """Keys every model has; a model's own schema subclasses this."""

    name: str = Field(description="the model builder (e.g. mlp, cnn, resnet, unet); its own keys follow")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability before the head; 0 = off")
    init_from: str = Field("", description="start from a run's weights: a run id, a .safetensors file, or "
                                           "recipe:NAME (a run of that recipe, trained once); '' = random init")
    embedding_dim: int = Field(0, ge=0, description="the head outputs an embedding of this width instead of "
                                                    "class scores (metric learning); 0 = a classifier")

