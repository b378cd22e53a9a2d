"""The settings schema: one frozen dataclass per stage (and for the shared read and run settings).

Every setting is a dataclass field made by :func:`setting`, whose metadata holds its help text,
its range or choices and its environment variable. Everything else is generated from these
classes, so a default, a range or a help text is written exactly once:

- the Click options of the commands (:func:`dedupkit.cli.schema.config_options`);
- the keys, types, ranges and environment variables of a TOML config file
  (:func:`dedupkit.config.resolve`);
- the typed Python API (``dedupkit.fuzzy(inputs, out, FuzzyConfig(threshold=0.8))``).

This module imports nothing heavy (no Click, no numpy): ``dedupkit --help`` reads it.

Example:
    >>> from dedupkit.settings import FuzzyConfig, specs
    >>> FuzzyConfig().threshold
    0.65
    >>> FuzzyConfig(threshold=0.8).threshold
    0.8
    >>> specs(FuzzyConfig)["num_perm"].range_text()
    '1<=x<=4096'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Iterable, Mapping

from dedupkit.errors import ConfigError

_META = "dedupkit"
KINDS = ("str", "int", "float", "flag", "choice", "path")


@dataclass(frozen=True)
class Spec:
    """What one setting accepts (read from a field made by :func:`setting`).

    Attributes:
        name: the field name (TOML key; ``--name-with-dashes`` on the command line).
        default: the default value.
        help: the help text (``--help`` and docs).
        kind: ``str``, ``int``, ``float``, ``flag``, ``choice`` or ``path`` (a folder).
        env: the option's own environment variable, or None.
        lo, hi: the inclusive bounds of a number (None = unbounded); ``min_open`` excludes ``lo``.
        choices: the valid values of a ``choice``.
        metavar: the placeholder shown in ``--help``.
    """

    name: str
    default: Any
    help: str
    kind: str
    env: str | None = None
    lo: float | None = None
    hi: float | None = None
    min_open: bool = False
    choices: tuple[str, ...] = ()
    metavar: str | None = None

    @property
    def flag(self) -> str:
        """The command-line flag: ``--num-perm`` for ``num_perm``."""
        return "--" + self.name.replace("_", "-")

    def range_text(self) -> str:
        """The range in Click's notation (``1<=x<=4096``, ``x>=1``, ``0<x<=1``), or ''."""
        if self.lo is None and self.hi is None:
            return ""
        left = f"{self.lo}{'<' if self.min_open else '<='}" if self.lo is not None else ""
        right = f"<={self.hi}" if self.hi is not None else ""
        if self.lo is not None and self.hi is None:
            return f"x{'>' if self.min_open else '>='}{self.lo}"
        return f"{left}x{right}"

    def _check_range(self, v: Any, where: str, shown: Any) -> Any:
        if self.kind == "choice" and v not in self.choices:
            raise ConfigError(f"{where} = {shown!r}: {v!r} is not one of "
                              f"{', '.join(repr(c) for c in self.choices)}.")
        if self.kind in ("int", "float"):
            low_bad = self.lo is not None and (v <= self.lo if self.min_open else v < self.lo)
            high_bad = self.hi is not None and v > self.hi
            if low_bad or high_bad:
                raise ConfigError(f"{where} = {shown!r}: {v} is not in the range {self.range_text()}.")
        return v

    def check(self, value: Any, where: str) -> Any:
        """Check a TOML (or ``--set``, or Python) value and convert it (an int to a float, an array
        of strings to a comma-separated string).

        Raises:
            ConfigError: naming ``where`` (e.g. ``"configs/web.toml: [fuzzy] threshold"``), the
                value and what is expected.
        """
        if value is None:
            return None
        v = value
        kind = self.kind
        what = {"int": "integer", "float": "number", "flag": "true or false", "choice": "choice",
                "path": "path", "str": "text"}[kind]
        if kind == "flag":
            if not isinstance(v, bool):
                raise ConfigError(f"{where} = {v!r}: expected true or false, got {type_name(v)}")
            return v
        if isinstance(v, (list, tuple)):
            # Comma-separated string options (normalize steps, ...) may be written as arrays.
            if kind in ("str", "choice") and all(isinstance(x, str) for x in v):
                v = ",".join(v)
            else:
                raise ConfigError(f"{where} = {value!r}: expected a single {what}, got an array")
        if isinstance(v, dict):
            raise ConfigError(f"{where} = {value!r}: expected a {what}, got {type_name(v)}")
        if kind == "int":
            if isinstance(v, (bool, float)):
                raise ConfigError(f"{where} = {v!r}: expected an integer, got {type_name(v)}")
            if isinstance(v, str):
                raise ConfigError(f"{where} = {v!r}: expected a number, got a string (write it without quotes)")
            if not isinstance(v, int):
                raise ConfigError(f"{where} = {v!r}: expected an integer, got {type_name(v)}")
        elif kind == "float":
            if isinstance(v, str):
                raise ConfigError(f"{where} = {v!r}: expected a number, got a string (write it without quotes)")
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{where} = {v!r}: expected a number, got {type_name(v)}")
            v = float(v)
        else:
            if kind == "str" and isinstance(v, (int, float)) and not isinstance(v, bool):
                v = str(v)  # free-text settings that hold numbers (semantic's eps = 0.07) may be bare
            if not isinstance(v, str):
                raise ConfigError(f"{where} = {v!r}: expected a string, got {type_name(v)} (quote it)")
        return self._check_range(v, where, value)

    def parse(self, raw: str, where: str) -> Any:
        """Parse an environment variable's string value (``where`` is the variable's name)."""
        if self.kind == "flag":
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ConfigError(f"{where}={raw!r}: expected true or false")
        v: Any = raw
        if self.kind == "int":
            try:
                v = int(raw.strip())
            except ValueError:
                raise ConfigError(f"{where}={raw!r}: expected an integer") from None
        elif self.kind == "float":
            try:
                v = float(raw.strip())
            except ValueError:
                raise ConfigError(f"{where}={raw!r}: expected a number") from None
        try:
            return self._check_range(v, where, raw)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(f"{where} = {raw!r}", f"{where}={raw!r}", 1)) from None


def setting(default: Any, help: str, *, kind: str | None = None, env: str | None = None,
            range: tuple[float | None, float | None] | None = None, min_open: bool = False,
            choices: Iterable[str] = (), metavar: str | None = None) -> Any:
    """A dataclass field that is a setting.

    Args:
        default: the default (None = unset; a flag's default is False).
        help: the help text.
        kind: ``str``, ``int``, ``float``, ``flag``, ``choice``, ``path``; derived from ``default``
            (and ``choices``) when left out.
        env: the setting's own environment variable (besides ``DEDUPKIT_<STAGE>_<NAME>``).
        range: ``(lo, hi)`` inclusive bounds of a number, None for an open end.
        min_open: ``lo`` itself is out of range.
        choices: the valid values (kind ``choice``).
        metavar: the placeholder in ``--help``.
    """
    choices = tuple(choices)
    if kind is None:
        if choices:
            kind = "choice"
        elif isinstance(default, bool):
            kind = "flag"
        elif isinstance(default, int):
            kind = "int"
        elif isinstance(default, float):
            kind = "float"
        else:
            kind = "str"
    if kind not in KINDS:
        raise ValueError(f"unknown setting kind {kind!r}")
    lo, hi = range if range is not None else (None, None)
    meta = {"help": help, "kind": kind, "env": env, "lo": lo, "hi": hi, "min_open": min_open,
            "choices": choices, "metavar": metavar}
    return dataclasses.field(default=default, metadata={_META: meta})


_UNSET: Any = object()


def like(cls: Any, name: str, help: str, *, default: Any = _UNSET, env: str | None = None) -> Any:
    """A setting of another command that accepts what ``cls.name`` accepts (same kind, range and
    choices; by default the same default), with its own help and environment variable."""
    sp = specs(cls)[name]
    return setting(sp.default if default is _UNSET else default, help, kind=sp.kind, env=env,
                   range=(sp.lo, sp.hi) if sp.lo is not None or sp.hi is not None else None,
                   min_open=sp.min_open, choices=sp.choices, metavar=sp.metavar)


def specs(cls_or_obj: Any) -> dict[str, Spec]:
    """The :class:`Spec` of every setting of a config class (or instance), in field order.

    A field made without :func:`setting` (a third-party config written as a plain dataclass) is a
    setting too: its kind comes from its default.
    """
    out: dict[str, Spec] = {}
    for f in fields(cls_or_obj):
        if not f.init or f.name.startswith("_"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        meta = f.metadata.get(_META)
        if meta is None:
            meta = setting(default, "").metadata[_META]
        out[f.name] = Spec(name=f.name, default=default, **meta)
    return out


def check_config(obj: Any) -> None:
    """Check every field of a config object against its spec (called by the configs' ``__post_init__``).

    Raises:
        ConfigError: ``<Class>.<field> = value: ...``.
    """
    for name, spec in specs(obj).items():
        value = getattr(obj, name)
        checked = spec.check(value, name)
        if checked is not value:
            object.__setattr__(obj, name, checked)


def validate(cls: Any, values: Mapping[str, Any]) -> None:
    """Check values against the specs of ``cls`` without converting them (for the stage-internal
    dataclasses, which keep the values they are given).

    Raises:
        ConfigError: ``name = value: ...``.
    """
    sp = specs(cls)
    for name, value in values.items():
        sp[name].check(value, name)


def choices(cls: Any, name: str) -> tuple[str, ...]:
    """The valid values of one choice setting (for code that checks them: it reads them from here)."""
    return specs(cls)[name].choices


def type_name(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "table"}.get(type(v), type(v).__name__)


def default_of(cls: Any, name: str) -> Any:
    """The default of one setting (for code that must name a default: it reads it from here)."""
    return specs(cls)[name].default


def to_options(obj: Any) -> dict[str, Any]:
    """The settings of a config object as a dict, in field order."""
    return {name: getattr(obj, name) for name in specs(obj)}


class _Checked:
    """Base of the built-in configs: values are checked (and converted) on construction."""

    def __post_init__(self) -> None:
        check_config(self)


# --------------------------------------------------------------------------------------------
# Shared settings


KEEP_ORDERS = ("asc", "desc")


def _keep_by(help: str) -> Any:
    return setting(None, help, kind="str", metavar="COLUMN")


def _keep_order(help: str) -> Any:
    return setting("desc", help, choices=KEEP_ORDERS)


@dataclass(frozen=True)
class ReadConfig(_Checked):
    """How shards are read; shared by every stage (the top level of a config file)."""

    text_column: str = setting("text", "Column (JSON key) holding the text.", env="DEDUPKIT_TEXT_COLUMN")
    id_column: str | None = setting(None, 'Unique id column; default doc_id is "{shard}:{row}".', kind="str",
                                    env="DEDUPKIT_ID_COLUMN")
    batch_size: int = setting(8192, "Records per read batch (bounds memory; the manifest does not depend on it).",
                              range=(1, None), env="DEDUPKIT_BATCH_SIZE")
    on_bad_record: str = setting("fail", "fail on the first bad record, or skip it (it is counted in the summary "
                                         "and is never kept or indexed).", choices=("fail", "skip"),
                                 env="DEDUPKIT_ON_BAD_RECORD")


@dataclass(frozen=True)
class RunConfig(_Checked):
    """Where and how the work runs; none of these changes a manifest."""

    workers: int = setting(1, "Worker processes; the output (manifest, clean shards) is identical for any "
                              "number.", range=(1, None), env="DEDUPKIT_WORKERS")
    engine: str = setting("local", "Where per-shard and per-partition work runs: local processes, or Ray "
                                   "(pip install 'dedupkit-corpus[ray]'); the output is the same. With ray, "
                                   "--workers is the most tasks running at once.", choices=("local", "ray"),
                          env="DEDUPKIT_ENGINE")
    ray_address: str | None = setting(None, "With --engine ray: the cluster to use ('auto' on a cluster node, "
                                            "ray://HEAD:10001, or 'local'). Default: RAY_ADDRESS if set, else "
                                            "start a local Ray instance with --workers CPUs.", kind="str",
                                      env="DEDUPKIT_RAY_ADDRESS", metavar="ADDRESS")


@dataclass(frozen=True)
class GuardConfig(_Checked):
    """The guardrail of a stage (a stage table's ``max_drop_rate``, or the run-wide one)."""

    max_drop_rate: float | None = setting(None, "Abort with exit code 4, writing nothing final, if the stage "
                                                "would drop more than this share of its input.", kind="float",
                                          range=(0, 1))


@dataclass(frozen=True)
class PipelineSettings(_Checked):
    """The run-wide settings of ``dedupkit run`` besides the read and run ones (top level of a config file)."""

    stages: str = setting("exact,fuzzy", "Comma-separated stages in order.", env="DEDUPKIT_STAGES", metavar="LIST")
    max_drop_rate: float | None = setting(None, "Abort with exit code 4, writing nothing final, if any stage would "
                                                "drop more than this share of the rows it sees (overrides "
                                                "per-stage values).", kind="float", range=(0, 1),
                                          env="DEDUPKIT_MAX_DROP_RATE")
    clean: str | None = setting(None, "Also write the kept rows (same names and formats as the input) to this "
                                      "folder.", kind="path", env="DEDUPKIT_CLEAN")


@dataclass(frozen=True)
class KeepConfig(_Checked):
    """Which copy of a duplicate group survives (exact and fuzzy)."""

    keep: str = setting("first", "Which copy survives; ties go to the lowest (shard, row).",
                        choices=("first", "last", "longest", "shortest"))
    keep_by: str | None = _keep_by("Keep the duplicate with the best value of COLUMN (ties: --keep).")
    keep_order: str = _keep_order("With --keep-by: desc keeps the largest value, asc the smallest.")


# --------------------------------------------------------------------------------------------
# Stages


@dataclass(frozen=True)
class ExactConfig(KeepConfig):
    """Settings of ``dedupkit exact`` (and the ``[exact]`` table).

    Example:
        >>> ExactConfig(normalize="nfkc,whitespace", keep="longest").keep
        'longest'
    """

    normalize: str = setting("lower,whitespace",
                             "Comma-separated steps before hashing: nfkc, lower, punctuation, digits, "
                             "whitespace; or none. The default lower-cases, collapses whitespace runs and "
                             "trims: it catches re-serialised and re-cased copies without merging texts whose "
                             "words differ (use whitespace or none for source code).", env="DEDUPKIT_NORMALIZE")



@dataclass(frozen=True)
class FuzzyConfig(KeepConfig):
    """Settings of ``dedupkit fuzzy`` (and the ``[fuzzy]`` table); defaults chosen by
    leave-one-suite-out over eight labelled suites (docs/fuzzy.md).

    Example:
        >>> FuzzyConfig(threshold=0.8, num_perm=256).num_perm
        256
    """

    shingle: str = setting("word", "word: n-grams of tokens (runs of letters, marks, digits, _ of any script) "
                                   "after NFKC and lower case; char: character n-grams, for scripts written "
                                   "without spaces (Chinese, Japanese, Thai).", choices=("word", "char"),
                           env="DEDUPKIT_SHINGLE")
    ngram: int = setting(5, "Shingle length in tokens (word) or characters (char). A document shorter than "
                            "one n-gram is one shingle; one without any token is never a fuzzy duplicate.",
                         range=(1, 64), env="DEDUPKIT_NGRAM")
    num_perm: int = setting(128, "MinHash permutations (signature length).", range=(1, 4096),
                            env="DEDUPKIT_NUM_PERM")
    seed: int = setting(1, "Seed of the permutations (datasketch's MinHash seed).", range=(0, 2**32 - 1),
                        env="DEDUPKIT_SEED")
    threshold: float = setting(0.65, "Jaccard similarity of shingle sets that makes two documents duplicates "
                                     "(measure jaccard).", range=(0, 1), min_open=True, env="DEDUPKIT_THRESHOLD")
    candidate_threshold: float = setting(0.5, "Jaccard similarity that LSH is tuned to find (bands and rows by "
                                              "datasketch's optimal-parameter rule; 0.5 gives 25 bands x 5 rows); "
                                              "lower finds more candidate pairs for the verifier.",
                                         range=(0, 1), min_open=True, env="DEDUPKIT_CANDIDATE_THRESHOLD")
    bands: int | None = setting(None, "LSH bands (with --rows; overrides --candidate-threshold).", kind="int",
                                range=(1, None))
    rows: int | None = setting(None, "LSH rows per band (with --bands).", kind="int", range=(1, None))
    verify: str = setting("sets", "How candidate pairs (sharing a band) are checked: not at all (none), by "
                                  "their signature estimate of Jaccard (signature), or on their true shingle "
                                  "sets (sets; re-reads the candidates' text; needed by --measure containment "
                                  "and char; jaccard is its old name).",
                          choices=("none", "signature", "sets", "jaccard"), env="DEDUPKIT_VERIFY")
    measure: str = setting("jaccard,char", "With --verify sets (signature verifies jaccard only), a pair is a "
                                           "duplicate when any of these reaches its threshold: jaccard (word "
                                           "shingles, --threshold), containment (shared shingles over the "
                                           "smaller document's: a page quoted inside a longer one, "
                                           "--containment-threshold), char (Jaccard of character n-grams: OCR "
                                           "noise and typos, --char-threshold).",
                           env="DEDUPKIT_MEASURE", metavar="M[,M...]")
    containment_threshold: float = setting(0.9, "Threshold of --measure containment.", range=(0, 1),
                                           min_open=True)
    containment_min: int = setting(20, "Containment counts only when the smaller document has at least this "
                                       "many distinct shingles (a one-line text is contained in many unrelated "
                                       "pages).", range=(1, None))
    char_threshold: float = setting(0.9, "Threshold of --measure char.", range=(0, 1), min_open=True)
    char_ngram: int = setting(5, "Character n-gram length of --measure char.", range=(1, 64))
    cluster: str = setting("centre", "centre: in keep-priority order, a document nobody claimed is kept and "
                                     "drops its verified neighbours nobody claimed; split: connected components, "
                                     "dropping only members verified against the component's kept document "
                                     "(local engine only).", choices=("centre", "split"))
    scheme: str = setting("affine64", "datasketch permutation scheme of the signatures (legacy = datasketch "
                                      "< 2.0).", choices=("affine64", "legacy"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.bands is None) != (self.rows is None):
            raise ConfigError("give bands and rows together, or neither to derive them from the candidate "
                              "threshold")



@dataclass(frozen=True)
class IndexConfig(_Checked):
    """What an index keeps (``dedupkit index create``; ``dedupkit check`` must match it). The MinHash
    settings accept what the fuzzy stage's do; ``threshold`` is the Jaccard similarity the index's
    LSH bands are tuned to."""

    stages: str = setting("exact", "Keys to keep: exact, fuzzy or exact,fuzzy.")
    normalize: str = like(ExactConfig, "normalize", "Normalization before the exact hash, as in `dedupkit exact` "
                                                    "(same default).")
    seed: int = like(FuzzyConfig, "seed", "MinHash seed.")
    num_perm: int = like(FuzzyConfig, "num_perm", "MinHash permutations.")
    shingle: str = like(FuzzyConfig, "shingle", "Shingles of words or of characters.")
    ngram: int = like(FuzzyConfig, "ngram", "Shingle length.")
    threshold: float = like(FuzzyConfig, "threshold", "Jaccard similarity that counts as a near duplicate.",
                            default=0.65)
    bands: int | None = like(FuzzyConfig, "bands", "LSH bands; default: the optimum for --threshold.")
    rows: int | None = like(FuzzyConfig, "rows", "LSH rows per band (with --bands).")

    MINHASH = ("seed", "num_perm", "shingle", "ngram", "threshold", "bands", "rows")


@dataclass(frozen=True)
class SemanticConfig(_Checked):
    """Settings of ``dedupkit semantic`` (and the ``[semantic]`` table).

    Example:
        >>> SemanticConfig(eps="0.05", model="static").eps
        '0.05'
    """

    model: str = setting("minilm", "Embedder: minilm (all-MiniLM-L6-v2, packaged, offline); static (a model2vec "
                                   "embedder distilled locally from minilm on first use, 50-250x faster on a "
                                   "CPU); model2vec:PATH; or any sentence-transformers name or local folder.",
                         env="DEDUPKIT_MODEL")
    device: str = setting("auto", "auto uses CUDA when torch sees a GPU.", choices=("auto", "cpu", "cuda"),
                          env="DEDUPKIT_DEVICE")
    backend: str = setting("auto", "How minilm (or another BERT sentence-transformers folder) runs: onnx = ONNX "
                                   "Runtime with an int8 export made once from the model's weights and cached "
                                   "(needs no torch); the documents near a decision are re-encoded with the "
                                   "float export, so decisions match torch's (about 3x torch's speed on a CPU); "
                                   "onnx-int8 = int8 only, no re-encoding (3.5-4x torch; 89-99% of torch's "
                                   "decisions); onnx-fp32 = the export unquantised (torch's embeddings, a little "
                                   "faster than torch); torch = sentence-transformers; auto = torch when it is "
                                   "installed, else onnx.",
                           choices=("auto", "torch", "onnx", "onnx-int8", "onnx-fp32"), env="DEDUPKIT_BACKEND")
    embed_batch_size: int = setting(64, "Texts per model forward pass (--batch-size is the read batch).",
                                    range=(1, None))
    max_tokens: int = setting(128, "Truncate each text to this many model tokens (MiniLM was trained on 128; "
                                   "longer costs time for little gain). Part of the embedding cache key.",
                              range=(8, 8192))
    eps: str = setting("0.065", "Duplicate when cosine to a kept neighbour >= 1 - eps. "
                                "With --analyze, a comma-separated list.")
    rewrite_eps: float = setting(0.145, "Rewrite band depth: also a duplicate at cosine >= 1 - eps - rewrite_eps "
                                        "when both texts have >= 20 words, share >= 40% of their content words, no "
                                        "number differs and they are not one template with other names in it (a "
                                        "rewrite, not a near miss: docs/semantic.md). 0 = cosine only.",
                                 range=(0, 2))
    mutual_eps: float = setting(0.0, "Mutual-neighbour tier: a rewrite (see --rewrite-eps) whose two texts are "
                                     "each other's nearest neighbour also counts down to cosine 1 - eps - "
                                     "rewrite_eps - mutual_eps (old and new translations of one text; 0.105 "
                                     "raised recall by half on verse translations: docs/semantic.md). 0 = off.",
                                range=(0, 2))
    embed_normalize: str = setting("none", "What the embedder reads: none = the text as it is; archaic = "
                                           "archaic English forms (thou hast, he maketh, unto) replaced by modern "
                                           "ones (opt-in, for old and modern translations of one text). The data "
                                           "is never changed. Part of the cache key.",
                                   choices=("archaic", "none"))
    search: str = setting("auto", "Where neighbours are looked for: exact = all documents (FAISS brute force); "
                                  "ivf = an approximate index, its recall against exact measured and reported; "
                                  "auto = exact up to 100,000 documents, ivf beyond; kmeans = only inside each "
                                  "k-means cluster (SemDeDup).", choices=("auto", "exact", "ivf", "kmeans"))
    neighbours: int = setting(32, "Nearest documents looked at per document.", range=(1, None))
    nprobe: int | None = setting(None, "With --search ivf: lists scanned per query [default: 32].", kind="int",
                                 range=(1, None))
    clusters: int | None = setting(None, "With --search kmeans: k-means clusters [default: ceil(docs / 1000)].",
                                   kind="int", range=(1, None))
    fit_sample: int | None = setting(None, "Fit k-means on a seeded sample of this many documents, then assign "
                                           "all [default: max(256 x clusters, 10,000)].", kind="int",
                                     range=(1, None))
    niter: int = setting(20, "k-means iterations.", range=(1, None))
    keep: str = setting("easy", "Which document of a duplicate group survives: easy = the most typical (highest "
                                "mean cosine to its neighbours; with --search kmeans nearest the centroid), hard = "
                                "the least typical (SemDeDup's choice), random (seeded), first = lowest (shard, "
                                "row).", choices=("hard", "easy", "random", "first", "last", "longest", "shortest"))
    keep_by: str | None = _keep_by("Rank by this column first (ties: --keep).")
    keep_order: str = _keep_order("With --keep-by: desc keeps the largest value, asc the smallest.")
    seed: int = setting(42, "IVF / k-means sample and --keep random seed.")
    analyze: bool = setting(False, "Drop nothing: write an all-keep manifest and OUTPUT/analysis.json with, per "
                                   "--eps value, how many documents would be dropped and the nearest pairs just "
                                   "inside and just outside each threshold (also printed on stderr and shown by "
                                   "`dedupkit report`).")
    cache_dir: str | None = setting(None, "Cache root for the embeddings, the model --model static distills "
                                          "and the --backend onnx export [default: $XDG_CACHE_HOME/dedupkit, else ~/.cache/dedupkit]; see "
                                          "`dedupkit cache info`.", kind="path", env="DEDUPKIT_CACHE_DIR")
    no_cache: bool = setting(False, "Neither read nor write the embedding cache.")

    def check_pipeline(self) -> None:
        """Settings that have no place in ``dedupkit run``."""
        if self.analyze:
            raise ConfigError("analyze = true drops nothing, so it has no place in a pipeline; run "
                              "`dedupkit semantic --analyze --skip OUT/NN-stage` on the earlier stages' output")



@dataclass(frozen=True)
class SubstringConfig(_Checked):
    """Settings of ``dedupkit substring`` (and the ``[substring]`` table).

    Example:
        >>> SubstringConfig(min_tokens=50).unit
        'span'
    """

    unit: str = setting("span", "span: every passage of at least --min-tokens tokens that occurs twice or more; "
                                "line / paragraph: whole normalised lines (paragraphs) repeated across "
                                "documents.", choices=("span", "line", "paragraph"))
    min_tokens: int | None = setting(None, "Shortest repeated passage cut (span; default 50), or shortest "
                                           "line/paragraph considered (default 5). Tokens: words, or single "
                                           "CJK/kana/Hangul characters and emoji.", kind="int", range=(1, None))
    keep: str = setting("first", "first: keep a passage at its first occurrence (see --keep-by) and cut the "
                                 "other copies; none: cut every copy (ExactSubstr's behaviour).",
                        choices=("first", "none"))
    keep_by: str | None = _keep_by("The document with the best value of COLUMN holds the kept occurrence "
                                   "(ties: first).")
    keep_order: str = _keep_order("With --keep-by: desc prefers the largest value, asc the smallest.")
    min_length: int = setting(0, "Drop a document that cutting leaves shorter than this many bytes.",
                              range=(0, None))
    min_docs: int = setting(2, "line/paragraph: cut a unit only when it occurs in at least this many documents.",
                            range=(2, None))
    protect: float = setting(0.8, "line/paragraph: leave a document whole when the cuts would remove more than "
                                  "this share of its bytes (so a document is never gutted by accident).",
                             range=(0, 1), min_open=True)
    partitions: int = setting(0, "Hash partitions for span mode (0: about one per 48 MB of input); each is "
                                 "sorted in its own task, so memory stays bounded for corpora larger than "
                                 "memory.", range=(0, None))



@dataclass(frozen=True)
class AuditConfig(_Checked):
    """Settings of ``dedupkit audit``."""

    min_tokens: int = setting(50, "Passage length (tokens) whose repeats are counted.", range=(1, None))
    partitions: int = setting(0, "Hash partitions (0: about one per 48 MB of input).", range=(0, None))
    work_dir: str | None = setting(None, "Where the temporary hash files go (default: the system temp folder).",
                                   kind="path")


@dataclass(frozen=True)
class EvalConfig(_Checked):
    """How eval items are matched (``dedupkit decontaminate`` and ``check --against EVAL``)."""

    eval_fields: str | None = setting(None, "Fields of JSONL/Parquet eval files to index, the prompt first "
                                            "(lists such as choices are joined); default: the first of question, "
                                            "prompt, problem, query, input, text.", kind="str",
                                      metavar="F1,F2,...")
    eval_id: str | None = setting(None, "Item id field of the eval files (default: the row or line number).",
                                  kind="str", metavar="FIELD")
    ngram: int = setting(13, "Window length in tokens (tokens: lower-cased runs of letters, digits and marks of "
                             "any script; punctuation, whitespace and line breaks do not matter).", range=(1, 64))
    min_tokens: int = setting(5, "Shortest window: a prompt shorter than --ngram is matched whole, extended into "
                                 "the next fields up to this many tokens; smaller items are not indexed.",
                              range=(1, 64))
    min_overlap: float = setting(0.5, "Share of an item's prompt tokens that matched n-grams must cover; a shared "
                                      "idiom covers little of a long prompt and is not a hit.", range=(0, 1),
                                 min_open=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_tokens > self.ngram:
            raise ConfigError(f"--min-tokens ({self.min_tokens}) must not exceed --ngram ({self.ngram})")


@dataclass(frozen=True)
class DecontaminateConfig(EvalConfig):
    """Settings of ``dedupkit decontaminate`` (besides the eval sets, ``--against``).

    Example:
        >>> DecontaminateConfig(mode="cut", margin=100).mode
        'cut'
    """

    mode: str = setting("drop", "drop: remove a document that holds an item; cut: remove the matched spans plus "
                                "--margin characters each side (OUT/spans/), dropping a document cut into more "
                                "than --max-pieces pieces or losing more than --max-cut-fraction of its text.",
                        choices=("drop", "cut"))
    margin: int = setting(200, "Characters removed on each side of a matched span (cut mode).", range=(0, None))
    max_pieces: int = setting(8, "Cut mode: drop a document that would be left in more pieces than this.",
                              range=(1, None))
    max_cut_fraction: float = setting(0.5, "Cut mode: drop a document when more than this share of its bytes "
                                           "would be cut.", range=(0, 1), min_open=True)

    def fields_list(self) -> list[str] | None:
        """``eval_fields`` as a list (None: the default fields)."""
        if self.eval_fields is None:
            return None
        return [f.strip() for f in self.eval_fields.split(",") if f.strip()] or None


# --------------------------------------------------------------------------------------------
# Reading a finished run


@dataclass(frozen=True)
class ReportConfig(_Checked):
    """How much ``dedupkit report`` shows."""

    largest: int = setting(20, "Largest clusters listed per stage.", range=(0, None))
    sample: int = setting(30, "Further clusters listed per stage, drawn at random (see --seed).", range=(0, None))
    max_members: int = setting(8, "Duplicates listed per cluster, least similar first.", range=(1, None))
    max_chars: int = setting(2000, "Characters shown of each text.", range=(100, None))
    seed: int = setting(0, "Seed of the cluster sample.")
    max_mb: float = setting(4.0, "Budget for the page's data; texts are cut shorter until it fits (the page says "
                                 "so).", range=(0.1, None))
    title: str | None = setting(None, "Page title (default: the folder name).", kind="str")


@dataclass(frozen=True)
class InspectConfig(_Checked):
    """How much ``dedupkit inspect`` shows of each cluster."""

    max_members: int = setting(20, "Duplicates shown per cluster, least similar first.", range=(1, None))
    max_chars: int = setting(1500, "Characters shown of each text.", range=(50, None))
