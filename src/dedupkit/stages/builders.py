"""Build each built-in stage from its settings (:mod:`dedupkit.settings`).

The settings schema describes settings and imports no stage; this module turns a config object into
the stage (and the stage-internal dataclasses) that runs it. The registry
(:func:`dedupkit.stages.registry.build_stage`) and the Python API (:mod:`dedupkit.api`) build stages
here.

Example:
    >>> from dedupkit.settings import ExactConfig
    >>> from dedupkit.stages.builders import make_stage
    >>> make_stage(ExactConfig(keep="longest")).config.policy.keep
    'longest'
"""

from __future__ import annotations

from typing import Any, Callable

from dedupkit import settings as S


def keep_policy(cfg: S.KeepConfig):
    """The :class:`dedupkit.policy.KeepPolicy` of a keep config (exact, fuzzy, ``check``)."""
    from dedupkit.policy import KeepPolicy

    return KeepPolicy(cfg.keep, cfg.keep_by, cfg.keep_order)


def exact_stage(cfg: S.ExactConfig, stage_class: Any = None):
    """The :class:`dedupkit.stages.exact.ExactStage` (or a subclass) of these settings."""
    from dedupkit.stages.exact import ExactConfig, ExactStage

    return (stage_class or ExactStage)(ExactConfig(normalize=cfg.normalize, policy=keep_policy(cfg)))


def fuzzy_stage(cfg: S.FuzzyConfig, stage_class: Any = None):
    """The :class:`dedupkit.stages.fuzzy.FuzzyStage` (or a subclass) of these settings."""
    from dedupkit.stages.fuzzy import FuzzyConfig, FuzzyStage

    opts = {k: v for k, v in S.to_options(cfg).items() if k not in S.specs(S.KeepConfig)}
    return (stage_class or FuzzyStage)(FuzzyConfig.from_options(keep=cfg.keep, keep_by=cfg.keep_by,
                                                                keep_order=cfg.keep_order, **opts))


def semantic_stage(cfg: S.SemanticConfig, stage_class: Any = None):
    """The :class:`dedupkit.stages.semantic.SemanticStage` (or a subclass) of these settings."""
    from dedupkit.embed import EmbedConfig
    from dedupkit.stages.semantic import SemanticConfig, SemanticStage

    return (stage_class or SemanticStage)(SemanticConfig(
        embed=EmbedConfig(model=cfg.model, device=cfg.device, batch_size=cfg.embed_batch_size,
                          max_tokens=cfg.max_tokens, backend=cfg.backend),
        eps=cfg.eps, rewrite_eps=cfg.rewrite_eps, mutual_eps=cfg.mutual_eps, embed_normalize=cfg.embed_normalize, search=cfg.search, neighbours=cfg.neighbours,
        nprobe=cfg.nprobe, clusters=cfg.clusters, fit_sample=cfg.fit_sample, niter=cfg.niter, keep=cfg.keep,
        keep_by=cfg.keep_by, order=cfg.keep_order, seed=cfg.seed, analyze=cfg.analyze,
        cache_dir=cfg.cache_dir, use_cache=not cfg.no_cache))


def substring_stage(cfg: S.SubstringConfig, stage_class: Any = None):
    """The :class:`dedupkit.stages.substring.SubstringStage` (or a subclass) of these settings."""
    from dedupkit.policy import KeepPolicy
    from dedupkit.stages.substring import SubstringConfig, SubstringStage

    return (stage_class or SubstringStage)(SubstringConfig(
        unit=cfg.unit, min_tokens=cfg.min_tokens, keep=cfg.keep, min_length=cfg.min_length,
        min_docs=cfg.min_docs, protect=cfg.protect, partitions=cfg.partitions,
        policy=KeepPolicy("first", cfg.keep_by, cfg.keep_order)))


def decontaminate_config(cfg: S.DecontaminateConfig):
    """The :class:`dedupkit.decontaminate.DecontaminateConfig` of these settings (the eval sets are
    loaded separately: :func:`dedupkit.decontaminate.load_eval_sets`)."""
    from dedupkit.decontaminate import DecontaminateConfig

    return DecontaminateConfig(ngram=cfg.ngram, min_tokens=cfg.min_tokens, min_overlap=cfg.min_overlap,
                               mode=cfg.mode, margin=cfg.margin, max_pieces=cfg.max_pieces,
                               max_cut_fraction=cfg.max_cut_fraction)


BUILDERS: dict[type, Callable[..., Any]] = {
    S.ExactConfig: exact_stage,
    S.FuzzyConfig: fuzzy_stage,
    S.SemanticConfig: semantic_stage,
    S.SubstringConfig: substring_stage,
}


def builder_of(config: Any) -> Callable[..., Any] | None:
    """The builder of a built-in config (or of a subclass of one), else None."""
    for cls in type(config).__mro__:
        if cls in BUILDERS:
            return BUILDERS[cls]
    return None


def make_stage(config: Any, stage_class: Any = None):
    """The stage of a built-in config object; ``stage_class`` (a subclass of the built-in stage)
    runs instead of the built-in one.

    Raises:
        TypeError: ``config`` is not a built-in stage config.
    """
    build = builder_of(config)
    if build is None:
        raise TypeError(f"{type(config).__name__} is not a built-in stage config")
    return build(config, stage_class)
