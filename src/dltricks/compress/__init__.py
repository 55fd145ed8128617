"""Compression: pruning and quantization with before/after measurements of size, latency and accuracy.

    from dltricks.compress import compress_run
    from dltricks.recipe import CompressSpec
    result = compress_run(ledger, "3f2a9c", [CompressSpec(quantize="dynamic"), CompressSpec(prune=0.5,
                          prune_mode="structured", finetune_epochs=2)])

Modules: :mod:`prune` (unstructured, iterative, lottery ticket), :mod:`structured` (channels removed for
real), :mod:`sparse` (CSR where it pays), :mod:`quantize` (dynamic, static, QAT, weight-only int8;
torch.ao isolated in :mod:`ao`), :mod:`store` (safetensors + JSON, rebuilt exactly), :mod:`measure`
(size, latency side by side, paired bootstrap), :mod:`pipeline` (one spec on one model), :mod:`runs`
(variants of a ledger run), :mod:`report` (table and Pareto plot).
"""

from dltricks.compress.pipeline import compress_model, label
from dltricks.compress.runs import CompressResult, compress_run, compress_trained, compressed_model, variant_specs
from dltricks.compress.store import load_compressed, save_compressed

__all__ = ["CompressResult", "compress_model", "compress_run", "compress_trained", "compressed_model", "label",
           "load_compressed", "save_compressed", "variant_specs"]
