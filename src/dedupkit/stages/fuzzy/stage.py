"""The fuzzy stage: its settings, and the steps that drive the per-task functions of ``tasks``.

:class:`FuzzyStage` plans the work (bucket and verification tasks over the scan's files) and hands
the global step to :mod:`~dedupkit.stages.fuzzy.single` (one process gathers the pairs) or, on a
distributed engine, to :mod:`~dedupkit.stages.fuzzy.partitioned` (nothing pair-sized on the
driver); both give the same manifest.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from dedupkit import settings as _S
from dedupkit.errors import ConfigError
from dedupkit.minhash import MinHashConfig, detection_probability
from dedupkit.policy import KeepPolicy
from dedupkit.stages.base import Decisions, Mapper, Stage
from dedupkit.stages.fuzzy.tasks import (
    MEASURE_NAMES, BandSplitTask, BucketTask, FuzzyMapper, ShingleSetTask, VerifyTask, band_split_task, bucket_task,
    rest_path, save_npy, shingle_set_task, unpack_payload, verify_task,
)

VERIFY_MODES = ("none", "signature", "sets")
MEASURES = ("jaccard", "containment", "char")
CLUSTER_MODES = _S.choices(_S.FuzzyConfig, "cluster")
# Documents per bucket task: more documents split a band by key hash into partitions. Each task
# reads only its partition's band keys (BandSplitTask), 16 bytes a document; the environment
# variable sets it for a cluster (more, bigger tasks) or a benchmark (docs/scaling.md).
DOCS_PER_PARTITION = int(os.environ.get("DEDUPKIT_DOCS_PER_PARTITION", "4000000"))


# The fuzzy-specific options of ``dedupkit fuzzy`` (config keys of [fuzzy]), as FuzzyConfig.from_options takes them.
FUZZY_OPTIONS = ("shingle", "ngram", "num_perm", "seed", "threshold", "candidate_threshold", "bands", "rows",
                 "scheme", "verify", "measure", "containment_threshold", "containment_min", "char_threshold",
                 "char_ngram", "cluster")


_F = _S.FuzzyConfig  # the defaults of every setting (dedupkit.settings)


@dataclass(frozen=True)
class FuzzyConfig:
    """Settings of the fuzzy stage.

    Attributes:
        minhash: shingling, permutations and banding. ``minhash.threshold`` is the *candidate*
            threshold: the Jaccard similarity LSH is tuned to find (bands and rows by datasketch's
            rule, unless ``bands``/``rows`` are given).
        threshold: word-shingle Jaccard that makes a verified duplicate (measure ``jaccard``).
        verify: ``none`` keeps every candidate pair, ``signature`` keeps pairs whose signature
            agreement (the Jaccard estimate) reaches ``threshold``, ``sets`` computes the measures on
            the true shingle sets (``jaccard`` is accepted as an old name of ``sets``).
        measures: with ``verify="sets"`` (other modes verify ``jaccard`` only and record that), a
            pair is a duplicate when any of these reaches its
            threshold: ``jaccard`` (word shingles), ``containment`` (|A & B| / min(|A|, |B|) of word
            shingles: a page quoted inside a longer one) and ``char`` (Jaccard of character
            ``char_ngram``-grams: OCR noise, typos, broken words).
        containment_threshold: for ``containment``.
        containment_min: the smaller document needs at least this many distinct word shingles for
            ``containment`` to count (a one-line text is contained in many unrelated pages).
        char_threshold, char_ngram: for ``char``.
        cluster: ``centre`` (greedy centres in keep-priority order) or ``split`` (connected
            components, keeping every member not directly verified against the representative; the
            alternative measured in docs/fuzzy.md, local engine only).
        policy: which document of a cluster survives (the centre order).
    """

    minhash: MinHashConfig = MinHashConfig(threshold=_S.FuzzyConfig.candidate_threshold)
    threshold: float | None = _S.FuzzyConfig.threshold
    verify: str = _S.FuzzyConfig.verify
    measures: tuple[str, ...] = tuple(_S.FuzzyConfig.measure.split(","))
    containment_threshold: float = _S.FuzzyConfig.containment_threshold
    containment_min: int = _S.FuzzyConfig.containment_min
    char_threshold: float = _S.FuzzyConfig.char_threshold
    char_ngram: int = _S.FuzzyConfig.char_ngram
    cluster: str = _S.FuzzyConfig.cluster
    policy: KeepPolicy = KeepPolicy()

    def __post_init__(self) -> None:
        if self.verify == "jaccard":  # the old name of sets
            object.__setattr__(self, "verify", "sets")
        if self.verify not in VERIFY_MODES:
            raise ConfigError(f"verify must be one of {', '.join(VERIFY_MODES)}, got {self.verify!r}")
        if self.threshold is None:
            object.__setattr__(self, "threshold", float(self.minhash.threshold))
        measures = tuple(self.measures.split(",")) if isinstance(self.measures, str) else tuple(self.measures)
        measures = tuple(dict.fromkeys(m.strip() for m in measures if m.strip()))
        object.__setattr__(self, "measures", measures)
        bad = [m for m in measures if m not in MEASURES]
        if bad or not measures:
            raise ConfigError(f"measure must be a comma-separated list of {', '.join(MEASURES)}, got "
                              f"{','.join(measures) or 'nothing'!r}")
        if self.verify != "sets":
            # Only the true sets have containment and char n-grams: signature (and none) verify
            # Jaccard, whatever --measure says (the summary's config records measure = jaccard).
            object.__setattr__(self, "measures", ("jaccard",))
        # ranges and choices: the schema's (dedupkit.settings)
        _S.validate(_F, {k: getattr(self, k) for k in ("threshold", "containment_threshold", "char_threshold",
                                                        "char_ngram", "containment_min", "cluster")})

    @classmethod
    def from_options(cls, *, shingle: str = _F.shingle, ngram: int = _F.ngram, num_perm: int = _F.num_perm,
                     seed: int = _F.seed, threshold: float = _F.threshold,
                     candidate_threshold: float | None = _F.candidate_threshold,
                     bands: int | None = None, rows: int | None = None, scheme: str = _F.scheme,
                     verify: str = _F.verify, measure: str | Sequence[str] = _F.measure,
                     containment_threshold: float = _F.containment_threshold,
                     containment_min: int = _F.containment_min, char_threshold: float = _F.char_threshold,
                     char_ngram: int = _F.char_ngram, cluster: str = _F.cluster, keep: str = _F.keep,
                     keep_by: str | None = None, keep_order: str = _F.keep_order) -> "FuzzyConfig":
        """The config from the ``dedupkit fuzzy`` options (``candidate_threshold`` None: ``threshold``).

        The defaults are the command's, chosen by leave-one-suite-out over eight labelled suites
        (docs/fuzzy.md, "Defaults and why").

        Raises:
            ConfigError: an invalid value, or ``bands`` without ``rows``.
        """
        if (bands is None) != (rows is None):
            raise ConfigError("give bands and rows together, or neither to derive them from the candidate threshold")
        mh = MinHashConfig(num_perm=num_perm, seed=seed, shingle=shingle, ngram=ngram,
                           threshold=threshold if candidate_threshold is None else candidate_threshold,
                           bands=bands, rows=rows, scheme=scheme)
        return cls(minhash=mh, threshold=threshold, verify=verify, measures=measure,
                   containment_threshold=containment_threshold, containment_min=containment_min,
                   char_threshold=char_threshold, char_ngram=char_ngram, cluster=cluster,
                   policy=KeepPolicy(keep, keep_by, keep_order))

    def measure_thresholds(self) -> dict[str, float]:
        """Threshold of every selected measure."""
        t = {"jaccard": self.threshold, "containment": self.containment_threshold, "char": self.char_threshold}
        return {m: float(t[m]) for m in self.measures}


class FuzzyStage(Stage):
    """Drop near-duplicates found by MinHash-LSH (see the module docstring for the steps).

    Example:
        >>> from dedupkit.io.read import ReadSpec
        >>> from dedupkit.runner import run_stage
        >>> from dedupkit.stages.fuzzy.stage import FuzzyConfig, FuzzyStage
        >>> stage = FuzzyStage(FuzzyConfig.from_options(threshold=0.7))
        >>> run_stage(stage, [str(data)], tmp / "fuzzy", ReadSpec()).summary["counts"]["dropped"]
        1
    """

    name = "fuzzy"

    def __init__(self, config: FuzzyConfig = FuzzyConfig()):
        self.config = config
        self.bands, self.rows = config.minhash.resolved()

    def mapper(self) -> Mapper:
        f = self.config
        return FuzzyMapper(f.minhash, self.word_sets(), f.verify != "sets", f.verify == "sets" and "char" in f.measures)

    def word_sets(self) -> bool:
        """Whether the scan keeps word-shingle sets (verification on true sets by a word measure)."""
        f = self.config
        return f.verify == "sets" and ("jaccard" in f.measures or "containment" in f.measures)

    def read_columns(self) -> tuple[str, ...]:
        return (self.config.policy.keep_by,) if self.config.policy.keep_by else ()

    def key(self) -> str:
        c = self.config.minhash
        return (f"fuzzy:v2:{c.scheme}:{c.shingle}:{c.ngram}:{c.num_perm}:{c.seed}:"
                f"{self.bands}x{self.rows}" + (":wsets" if self.word_sets() else "") +
                (":nosig" if self.config.verify == "sets" else ""))

    def config_dict(self) -> dict:
        c, f = self.config.minhash, self.config
        mh = asdict(c)
        mh["candidate_threshold"] = mh.pop("threshold")
        return {**mh, "bands": self.bands, "rows": self.rows, "hash": "xxh3_64", "threshold": f.threshold,
                "verify": f.verify, "measure": ",".join(f.measures), "thresholds": f.measure_thresholds(),
                "containment_min": f.containment_min, "char_ngram": f.char_ngram, "cluster": f.cluster,
                **asdict(f.policy)}

    def priority(self, corpus) -> list[np.ndarray]:
        """The keep policy's sort keys for the corpus (lower wins)."""
        pol = self.config.policy
        return pol.priority(len(corpus), corpus.lengths, corpus.extra.get(pol.keep_by) if pol.keep_by else None)

    def decisions(self, n: int, docs: np.ndarray, centre: np.ndarray, payload: np.ndarray,
                  stats: dict) -> Decisions:
        """Decisions from the claimed documents, their centres and the deciding pairs' payloads.

        Shared by the local global step and the partitioned one (:mod:`~dedupkit.stages.fuzzy.partitioned`).
        """
        code = np.full(n, -1, dtype=np.int64)
        sims = None
        if len(docs):
            sims, code[docs] = unpack_payload(payload)
        names = np.array(MEASURE_NAMES, dtype=object)
        import pyarrow as pa

        measure = pa.array(np.where(code >= 0, names[np.maximum(code, 0)], None), pa.string())
        dropped = code[code >= 0]
        stats["decided_by"] = {MEASURE_NAMES[c]: int(k) for c, k in enumerate(np.bincount(dropped, minlength=len(
            MEASURE_NAMES)).tolist()) if k}
        return Decisions.of_centres(n, docs, centre, sims, extra={"measure": measure}, stats=stats)

    def prepare_buckets(self, corpus, workdir: str):
        """The start both global steps share: the keep-priority rank (saved for the bucket tasks
        unless keep first, where the rank is the index) and :meth:`bucket_tasks`.

        Returns ``(work, keys, rank, (paths, offsets, nparts, btasks))``.
        """
        from dedupkit.policy import priority_rank
        from dedupkit.stages.fuzzy.tasks import save_npy

        work = Path(workdir)
        work.mkdir(parents=True, exist_ok=True)
        keys = self.priority(corpus)
        rank = priority_rank(keys, len(corpus))
        rank_path = str(work / "rank.npy")
        save_npy(rank_path, rank)
        return work, keys, rank, self.bucket_tasks(corpus, work, rank_path if keys else "")

    def bucket_tasks(self, corpus, work: Path, rank_path: str = ""):
        """Feature-file paths, task offsets, document partitions and one BucketTask per (band, partition).

        Shared by the local global step and the partitioned one (:mod:`~dedupkit.stages.fuzzy.partitioned`).
        """

        def paths(name: str) -> tuple[str, ...]:
            return tuple(str(Path(t.workdir) / f"task-{t.index:05d}.{name}.npy") for t in corpus.tasks)

        offsets = tuple(int(x) for x in corpus.task_offsets[:-1])
        nparts = max(1, -(-len(corpus) // DOCS_PER_PARTITION))
        splits = [BandSplitTask(b, s, o, nparts, str(work / f"bands-t{t:05d}"))
                  for t, (b, s, o) in enumerate(zip(paths("band"), paths("nsh"), offsets))]
        btasks = [BucketTask(b, p, nparts, tuple(s.prefix for s in splits),
                             str(work / f"pairs-b{b:03d}-p{p:03d}.npy"), rank_path)
                  for b in range(self.bands) for p in range(nparts)]
        return paths, offsets, nparts, (splits, btasks)

    def candidate_buckets(self, engine, tasks) -> list[dict[str, int]]:
        """Run the band split, then the bucket tasks; the bucket tasks' ``{"pairs", "bytes_read"}``."""
        splits, btasks = tasks
        engine.map(band_split_task, splits, desc="fuzzy: band split")
        res = engine.map(bucket_task, btasks, desc="fuzzy: buckets")
        for s in splits:
            for name in ("keys", "idx", "bounds"):
                Path(f"{s.prefix}.{name}.npy").unlink(missing_ok=True)
        return res

    def verify_tasks(self, files: list[str], paths, offsets, set_prefixes: tuple[str, ...], work: Path,
                     name: str, thresholds: dict[str, float]) -> list[VerifyTask]:
        """One VerifyTask per candidate pair file."""
        f = self.config
        ws = (paths("wset"), paths("wsetn")) if self.word_sets() else ((), ())
        return [VerifyTask(p, f.verify, tuple(thresholds.items()), paths("sig"), offsets, set_prefixes,
                           str(work / f"verified-{name}{k:05d}.npy"), f.containment_min, *ws)
                for k, p in enumerate(files)]

    def verify(self, corpus, files: list[str], paths, offsets, work: Path, engine, name: str,
               char_sets=None) -> tuple[list[str], list[dict]]:
        """Verify the candidate pair files; returns the verified pair files and the tasks' counts.

        Word measures (and the signature modes) first, on data the scan wrote; then, for the pairs
        they left, the char measure, whose n-gram sets need the text of those pairs' documents read
        again. Shared by the local global step and the partitioned one (:mod:`~dedupkit.stages.fuzzy.partitioned`).
        ``char_sets(files)`` (default: the documents gathered here, :meth:`shingle_sets`) returns the
        char n-gram set prefixes of the documents of the leftover pair files (``()`` for none);
        :mod:`dedupkit.engine.driver` passes one that finds them with tasks.
        """
        thr = self.config.measure_thresholds()
        char = self.config.verify == "sets" and "char" in thr
        first = {m: t for m, t in thr.items() if not (char and m == "char")}
        outs: list[str] = []
        vres: list[dict] = []
        if first and files:
            tasks = self.verify_tasks(files, paths, offsets, (), work, name + "w", first)
            vres += engine.map(verify_task, tasks, desc="fuzzy: verify")
            outs += [t.out for t in tasks]
            files = [rest_path(t.out) for t in tasks]
        if char and files:
            prefixes = (char_sets or (lambda fs: self._gathered_sets(corpus, fs, work, engine)))(files)
            if prefixes:
                tasks = self.verify_tasks(files, paths, offsets, prefixes, work, name + "c", {"char": thr["char"]})
                vres += engine.map(verify_task, tasks, desc="fuzzy: verify char n-grams")
                outs += [t.out for t in tasks]
        return outs, vres

    def base_stats(self, nsh_empty: int, nparts: int, n_candidates: int, vres: list[dict]) -> dict:
        """Summary stats common to both global steps."""
        f = self.config
        by: dict[str, int] = {}
        for r in vres:
            for k, v in r.items():
                if k != "verified":
                    by[k] = by.get(k, 0) + int(v)
        return {
            "bands": self.bands, "rows": self.rows, "candidate_threshold": float(f.minhash.threshold),
            "detection_probability": {str(s): round(detection_probability(s, self.bands, self.rows), 4)
                                      for s in (0.5, 0.7, 0.8, 0.9)},
            "documents_without_shingles": int(nsh_empty),
            "candidate_pairs": int(n_candidates),
            "verified_pairs": int(sum(r.get("verified", 0) for r in vres)) if f.verify != "none" else int(n_candidates),
            "verified_pairs_by_measure": by,
            "partitions_per_band": nparts,
        }

    def identify(self, corpus, workdir: str) -> Decisions:
        """Decisions for every active document (see the package docstring for the steps)."""
        from dedupkit.engine.local import LocalEngine

        engine = self.engine or LocalEngine()
        if engine.distributed:
            # pairs and clusters stay partitioned, off the driver
            from dedupkit.stages.fuzzy.partitioned import identify_partitioned

            return identify_partitioned(self, corpus, workdir, engine)
        from dedupkit.stages.fuzzy.single import identify_single

        return identify_single(self, corpus, workdir, engine)

    def _gathered_sets(self, corpus, files: list[str], work: Path, engine) -> tuple[str, ...]:
        # Only the ids of documents in pairs left over reach the driver (at most one per document).
        ids = [np.unique(np.load(f)) for f in files]
        docs = np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int64)
        return self.shingle_sets(corpus, docs, work, engine) if len(docs) else ()

    def shingle_sets(self, corpus, docs: np.ndarray, work: Path, engine) -> tuple[str, ...]:
        """Char n-gram sets of ``docs`` (sorted global indices), one task per scan task holding some
        (word sets come from the scan)."""
        char = self.config.char_ngram
        t_of = np.searchsorted(corpus.task_offsets, docs, side="right") - 1
        tasks = []
        for ti in np.unique(t_of).tolist():
            w = str(work / f"wanted-{ti:05d}.npy")
            save_npy(w, docs[t_of == ti])
            tasks.append(ShingleSetTask(corpus.tasks[ti], int(corpus.task_offsets[ti]), w, self.config.minhash,
                                        str(work / f"sets-{ti:05d}"), False, char))
        engine.map(shingle_set_task, tasks, desc="fuzzy: shingle sets")
        return tuple(t.out for t in tasks)
