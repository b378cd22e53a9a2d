"""How far the int8 ONNX export's cosines are from the float model's: the bounds behind
``--backend onnx``'s near-boundary refinement (``dedupkit.stages.semantic_refine``).

Calibration text that is not an evaluation suite: the paragraphs of Python's own documentation
topics (``pydoc_data.topics``, shipped with CPython; :func:`dedupkit.embed_onnx.pydoc_paragraphs`)
that the export's SmoothQuant calibration did not see (it reads the first
``CALIBRATION_PARAGRAPHS``), each with two seeded edited copies (words deleted, substituted by
another word of the paragraph, or sentences swapped, at 3-25 %), so pairs span cosines from
unrelated to near-identical. Every text is embedded with the int8 export
(``onnx-int8``) and the float export (``onnx-fp32``, torch's embeddings to cosine 1.0000) of the
packaged MiniLM; for every pair among each text's 32 nearest neighbours at float cosine >= 0.7, the
error is int8 cosine - float cosine; for every document, the error of its ranking score (mean
cosine to its 10 nearest neighbours, ``Neighbours.density``). Prints percentiles and writes JSON.

Usage:
    OMP_NUM_THREADS=2 python benchmarks/onnx_error.py --out benchmarks/results/onnx_error.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def calibration_texts(seed: int = 0) -> list[str]:
    """Paragraphs of pydoc's topics (>= 20 words) the export was not calibrated on, and two edited
    copies of each."""
    from dedupkit.embed_onnx import CALIBRATION_PARAGRAPHS, pydoc_paragraphs

    rng = random.Random(seed)
    paras = pydoc_paragraphs()[CALIBRATION_PARAGRAPHS:]
    out = []
    for p in paras:
        out.append(p)
        words = p.split()
        for _ in range(2):
            rate = rng.uniform(0.03, 0.25)
            kind = rng.choice(("delete", "substitute", "swap"))
            w = list(words)
            if kind == "swap":
                sents = re.split(r"(?<=[.:;])\s+", p)
                for _ in range(max(1, int(rate * len(sents) * 2))):
                    if len(sents) > 1:
                        a, b = rng.sample(range(len(sents)), 2)
                        sents[a], sents[b] = sents[b], sents[a]
                out.append(" ".join(sents))
                continue
            for i in sorted(rng.sample(range(len(w)), max(1, int(rate * len(w)))), reverse=True):
                if kind == "delete":
                    del w[i]
                else:
                    w[i] = rng.choice(words)
            out.append(" ".join(w))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--min-cosine", type=float, default=0.7, help="pairs at float cosine >= this are measured")
    ap.add_argument("--cache-dir", default=None, help="where the ONNX export is made (default: a temp folder)")
    ap.add_argument("--out", default=None, help="write results as JSON here")
    args = ap.parse_args()
    from dedupkit.embed import EmbedConfig, get_embedder
    from dedupkit.neighbours import search

    texts = calibration_texts()
    cache = args.cache_dir or tempfile.mkdtemp(prefix="onnx-error-")
    vec, secs = {}, {}
    for b in ("onnx-int8", "onnx-fp32"):
        emb = get_embedder(EmbedConfig(model="minilm", device="cpu", backend=b, max_tokens=args.max_tokens,
                                       cache_dir=cache))
        t0 = time.perf_counter()
        vec[b] = emb.encode(texts)
        secs[b] = time.perf_counter() - t0
    x8, x32 = vec["onnx-int8"], vec["onnx-fp32"]
    nb32 = search(x32, 32, args.min_cosine, "exact")
    nb8 = search(x8, 32, args.min_cosine, "exact")
    e = np.unique(np.concatenate([nb32.edges, nb8.edges]), axis=0)
    c32 = np.einsum("ij,ij->i", x32[e[:, 0]], x32[e[:, 1]])
    c8 = np.einsum("ij,ij->i", x8[e[:, 0]], x8[e[:, 1]])
    sel = np.maximum(c32, c8) >= args.min_cosine
    err = np.abs(c8 - c32)[sel]
    derr = np.abs(nb8.density - nb32.density)
    doc_cos = np.einsum("ij,ij->i", x8, x32)
    pct = (50, 99, 99.9, 99.99, 100)
    res = {"texts": len(texts), "pairs": int(sel.sum()), "min_cosine": args.min_cosine,
           "encode_s": secs, "load_avg": os.getloadavg(),
           "pair_error": {str(p): float(np.percentile(err, p)) for p in pct},
           "density_error": {str(p): float(np.percentile(derr, p)) for p in pct},
           "doc_cosine_min": float(doc_cos.min()), "doc_cosine_mean": float(doc_cos.mean())}
    print(f"int8 vs float, packaged MiniLM, {len(texts)} texts (held-out pydoc topics + edited copies), "
          f"{res['pairs']} pairs at cosine >= {args.min_cosine}")
    print("| error | " + " | ".join(f"p{p}" for p in pct) + " |")
    print("|---|" + "---|" * len(pct))
    for k in ("pair_error", "density_error"):
        print(f"| {k.replace('_', ' ')} | " + " | ".join(f"{res[k][str(p)]:.4f}" for p in pct) + " |")
    print(f"document cosine int8 to float: min {res['doc_cosine_min']:.4f}, mean {res['doc_cosine_mean']:.4f}")
    from dedupkit.stages.semantic_refine import INT8_DENSITY_ERROR, INT8_PAIR_ERROR

    print(f"bounds in use: pair {INT8_PAIR_ERROR}, density {INT8_DENSITY_ERROR}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
