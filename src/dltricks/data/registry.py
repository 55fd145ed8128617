"""The dataset registry: a dataset is a recipe schema plus a function that returns tensors."""

from __future__ import annotations

from collections.abc import Callable

from dltricks.data.bundle import DataBundle, Pair, Target, Task  # noqa: F401  (re-exported: older imports)
from dltricks.errors import unknown
from dltricks.recipe import DataSpec, register_section

Loader = Callable[[DataSpec, int], DataBundle]
_LOADERS: dict[str, Loader] = {}
# the loader of ``data.name = "module:function"`` (dltricks.data.function), kept apart: it is no dataset name
_IMPORTED: list[Loader] = []


def register_dataset(name: str, spec: type[DataSpec]) -> Callable[[Loader], Loader]:
    """Decorator: ``@register_dataset("mnist1d", Mnist1dSpec)`` on ``load(spec, seed) -> DataBundle``.

    The loader returns train and test (and ``val`` only where the data has its own);
    :func:`load_data` carves validation out of train, never out of test.
    """

    def deco(fn: Loader) -> Loader:
        register_section("data", name, spec)
        _LOADERS[name] = fn
        return fn

    return deco


def register_loader(name: str, fn: Loader) -> None:
    """``name = ":"``: the loader of every import-path data name ("module:function")."""
    if name != ":":
        raise ValueError("register_loader takes ':' (import paths); datasets use @register_dataset")
    _IMPORTED[:] = [fn]


def _loader(name: str) -> Loader:
    if name in _LOADERS:
        return _LOADERS[name]
    if ":" in name and _IMPORTED:
        return _IMPORTED[0]
    raise unknown("dataset", name, _LOADERS)


def datasets() -> list[str]:
    return sorted(_LOADERS)


def load_data(spec: DataSpec, seed: int = 0) -> DataBundle:
    """Load the dataset a recipe names, with a validation split fixed by ``seed``."""
    from dltricks.data.splits import carve_val

    loader = _loader(spec.name)
    from dltricks.data.standardize import fit_standardizer, standardize_bundle, wants_standardize
    from dltricks.data.subsets import few_labels, hold_out_classes, keep_classes

    bundle = loader(spec, seed)
    if spec.attributes or bundle.attributes is not None:
        from dltricks.data.attributes import check_attributes, read_attributes

        if spec.attributes:
            bundle.attributes = read_attributes(spec.attributes)
        names = bundle.class_names or [str(i) for i in range(bundle.num_classes)]
        check_attributes(bundle.attributes, names, spec.attributes or f"dataset {spec.name}")
    if spec.novel_classes:
        hold_out_classes(bundle, spec.novel_classes, spec.classes)
    elif spec.classes:
        keep_classes(bundle, spec.classes)
    if bundle.val is None and spec.val_fraction > 0:
        bundle.train, bundle.val = carve_val(bundle.train, spec.val_fraction, seed,
                                             stratify=bundle.task == "classification")
    # statistics of the training split as it stands now: validation and test already set apart
    stats = fit_standardizer(bundle.train[0]) if wants_standardize(spec, bundle) else None
    if spec.labels_per_class:
        few_labels(bundle, spec.labels_per_class, seed)
    if spec.target.active:
        from dltricks.data.domains import add_target

        add_target(bundle, spec, seed, loader)
    if stats is not None:
        standardize_bundle(bundle, stats)
    return bundle
