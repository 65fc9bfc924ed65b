"""Patching sweeps: every patch of a `Target`, batched, with mean and stderr over sequences.

    activation_patching(model, clean, corrupted, Target("z"), metric)          # denoising
    activation_patching(..., mode="noise")                                      # noising
    ablation(model, tokens, Target("z", by="all"), metric, kind="mean")         # zero/mean/resample

Both return a `PatchResult` whose ``.mean`` has the shape `transformer_lens.patching`'s matching
``get_act_patch_*`` returns (denoising, with a metric that averages over the batch).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from interp_icl.analysis.common import check_tokens_for
from interp_icl.errors import require
from interp_icl.patching import fast_engine, hooks_engine
from interp_icl.patching.metrics import Metric, metric_on_output, per_sequence
from interp_icl.patching.result import PatchResult
from interp_icl.patching.sources import ablation_activations, cached_activations
from interp_icl.patching.targets import Configs, Target, heads_per_layer, target_hooks

ENGINES = ("auto", "fast", "hooks")
MODES = ("denoise", "noise")
DEFAULT_MEMORY_MB = 1024


def choose_engine(model: nn.Module, engine: str = "auto") -> str:
    """ "fast" where the model has the standard layout, else "hooks"."""
    require(
        engine in ENGINES, f"unknown patching engine {engine!r}; choose one of {', '.join(ENGINES)}"
    )
    reason = fast_engine.unsupported_reason(model)
    if engine == "fast":
        require(reason is None, f"the fast patching engine cannot run this model: {reason}")
    if engine == "auto":
        return "fast" if reason is None else "hooks"
    return engine


def base_and_source(
    model: nn.Module, clean_tokens: Tensor, corrupted_tokens: Tensor, mode: str
) -> tuple[Tensor, Tensor]:
    """(run patched, run patched from): (corrupted, clean) when denoising, (clean, corrupted) when
    noising; both checked against the model and each other."""
    require(mode in MODES, f"unknown patching mode {mode!r}; choose 'denoise' or 'noise'")
    clean = check_tokens_for(model, clean_tokens)
    corrupted = check_tokens_for(model, corrupted_tokens)
    require(
        clean.shape == corrupted.shape,
        f"clean tokens {tuple(clean.shape)} and corrupted tokens {tuple(corrupted.shape)} differ in shape",
    )
    return (corrupted, clean) if mode == "denoise" else (clean, corrupted)


def patch_sweep(
    model: nn.Module,
    base_tokens: Tensor,
    sources: dict[str, Tensor],
    target: Target,
    metric: Metric,
    *,
    source_values: Tensor | None = None,
    engine: str = "auto",
    memory_mb: float = DEFAULT_MEMORY_MB,
    progress: bool = False,
) -> PatchResult:
    """Run every patch of `target` on the run of `base_tokens` ``[B, T]``, patching in `sources`
    (``{hook name: [B or 1, ...]}``), and evaluate `metric` per sequence.

    `memory_mb` bounds the memory of the patches run together (a chunk); `source_values` ``[B]``
    (the metric on the source run) is carried into the result for normalised recovery.
    """
    model.eval()
    tokens = check_tokens_for(model, base_tokens)
    batch, seq_len = tokens.shape
    cfg = model.cfg
    configs = target.configs(cfg.n_layers, heads_per_layer(model, target), seq_len)
    for name in target_hooks(model, target):
        require(name in sources, f"no source activation for {name}")
    engine = choose_engine(model, engine)
    read_rows = metric.rows(seq_len)

    with torch.no_grad():
        if engine == "fast":
            base_names = fast_engine.FastEngine.needed_hooks(cfg.n_layers, target.site)
            base_output, cache = model.run_with_cache(
                tokens, names_filter=lambda n: n in set(base_names)
            )
            base = {name: cache[name].detach() for name in base_names}
            runner = fast_engine.FastEngine(model, base, base_output.detach(), sources, read_rows)
            per_config = runner.bytes_per_config(batch)
        else:
            base_output = model(tokens)
            per_config = hooks_engine.bytes_per_config(model, tokens)
        baseline = metric_on_output(metric, base_output)

        chunk = max(1, int(memory_mb * 2**20 // per_config))
        values = torch.empty(len(configs), batch, dtype=baseline.dtype)
        chunks = list(_chunks(configs, chunk, by_layer=engine == "fast"))
        for index in _progress(chunks, progress, f"patching {target.site}"):
            part = configs.subset(index)
            if engine == "fast":
                outputs = runner.outputs(part)
            else:
                outputs = hooks_engine.hooked_outputs(model, tokens, part, sources, read_rows)
            values[index] = per_sequence(metric, outputs)
    return PatchResult(
        site=target.site,
        axes=configs.axes,
        layers=configs.layers,
        values=values.view(*configs.shape, batch),
        baseline=baseline,
        source=source_values,
        metric=metric.name,
        info={"engine": engine, "chunk_size": chunk, "memory_mb": memory_mb, "by": target.by},
    )


def activation_patching(
    model: nn.Module,
    clean_tokens: Tensor,
    corrupted_tokens: Tensor,
    target: Target,
    metric: Metric,
    *,
    mode: str = "denoise",
    **options,
) -> PatchResult:
    """Denoising (run corrupted, patch in clean: which activations restore the clean behaviour)
    or noising (run clean, patch in corrupted: which activations break it)."""
    base, source = base_and_source(model, clean_tokens, corrupted_tokens, mode)
    model.eval()
    sources = cached_activations(model, source, target_hooks(model, target))
    source_values = metric_values(model, source, metric)
    result = patch_sweep(
        model, base, sources, target, metric, source_values=source_values, **options
    )
    result.info["mode"] = mode
    return result


def ablation(
    model: nn.Module,
    tokens: Tensor,
    target: Target,
    metric: Metric,
    *,
    kind: str = "zero",
    reference_tokens: Tensor | None = None,
    **options,
) -> PatchResult:
    """Zero, mean or resample ablation of every patch of `target` (see `ablation_activations`)."""
    tokens = check_tokens_for(model, tokens)
    if reference_tokens is not None:
        reference_tokens = check_tokens_for(model, reference_tokens)
    model.eval()
    sources = ablation_activations(
        model, kind, target_hooks(model, target), tokens, reference_tokens
    )
    result = patch_sweep(model, tokens, sources, target, metric, **options)
    result.info["ablation"] = kind
    return result


def metric_values(model: nn.Module, tokens: Tensor, metric: Metric) -> Tensor:
    """``[B]`` the metric on the unpatched run of `tokens`."""
    with torch.no_grad():
        return metric_on_output(metric, model(tokens))


def _chunks(configs: Configs, size: int, by_layer: bool) -> Iterator[Tensor]:
    """Index tensors of at most `size` patches (one layer per chunk when `by_layer`)."""
    groups = (
        [torch.nonzero(configs.layer == layer)[:, 0] for layer in configs.layers]
        if by_layer
        else [torch.arange(len(configs))]
    )
    for group in groups:
        yield from torch.split(group, size)


def _progress(items: list, show: bool, label: str):
    if not show or len(items) < 2:
        yield from items
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=len(items))
        for item in items:
            yield item
            bar.advance(task)
