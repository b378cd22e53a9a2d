"""The ONNX Runtime backend of the semantic stage: a BERT sentence-transformers model exported
offline to ONNX, int8-quantised, cached, and run without torch.

Why not sentence-transformers' own ``backend="onnx"``: it needs ``optimum-onnx``, which pins
``transformers<4.58`` (``pip install --dry-run 'optimum-onnx[onnxruntime]'`` would downgrade the
installed transformers 5.x), and its export runs the model through torch. Instead the graph is
written here from the model's safetensors weights with the ``onnx`` package (BERT encoder, mean
pooling and L2 normalisation: the whole sentence-transformers pipeline of ``minilm``), then
dynamically quantised to int8 with ``onnxruntime.quantization``. Neither the export nor the
run imports torch, so ``pip install 'dedupkit-corpus[semantic-lite]'`` (no torch) is
enough for ``--backend onnx``.

The export is made once per model folder and kept under ``CACHE/onnx/`` (see
:func:`dedupkit.embed.cache_root` and ``dedupkit cache info``).

Example:
    >>> from dedupkit.embed import EmbedConfig, get_embedder
    >>> emb = get_embedder(EmbedConfig(model="minilm", backend="onnx", cache_dir=str(tmp / "cache")))
    >>> emb.encode(["How do I learn Python?"]).shape
    (1, 384)
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from dedupkit.errors import ConfigError, require

log = logging.getLogger(__name__)

#: Bumped whenever the exported graph, its quantisation or what the encoder computes from it changes:
#: part of the cache folder name and of the embedding cache key, so old exports and embeddings are
#: never reused. v5: identical texts are encoded once (their int8 vectors no longer depend on
#: which batch each copy fell in). v6: the int8 model is quantised after SmoothQuant smoothing
#: (:func:`smoothing_scales`).
EXPORT_VERSION = 6
MODEL_FILE = "model_int8.onnx"
FP32_FILE = "model_fp32.onnx"
#: Batches of texts this short (in tokens, with [CLS] and [SEP]) run the float model: int8 noise
#: averages out over many tokens but not over a few (cosine to torch fell to 0.97 for one-word
#: texts), and short texts cost little either way.
FLOAT_MAX_TOKENS = 16
OPSET = 17  # LayerNormalization
#: Tokens a batch holds (at most; one text at least): small batches keep the activations in the
#: CPU caches. 8 texts of 128 tokens took 10-15% less CPU per text than 64.
BATCH_TOKENS = 1024
#: A text longer than ``max_tokens`` times this many characters is tokenised from its head first
#: (:meth:`OnnxEmbedder.tokenize`); English averages 4-5 characters a token.
CUT_CHARS_PER_TOKEN = 8
#: Sessions run side by side at most (each with its own copy of the weights, ~25 MB for MiniLM).
MAX_WORKERS = 4
#: SmoothQuant's migration strength: a GEMM input channel is divided by ``a**ALPHA / w**(1-ALPHA)``
#: (``a``: its largest calibration activation, ``w``: its largest weight). Chosen on pydoc text
#: (mean of 1 - cosine, int8 to float, over 300 texts, 150 of them the worst without smoothing:
#: none 0.0085; alpha 0.5 0.0158, 0.65 0.0036, 0.75 0.0029, 0.85 0.0021, 0.95 0.0031, 1.0 0.0029).
SMOOTH_ALPHA = 0.85
#: Paragraphs of Python's documentation topics (:func:`pydoc_paragraphs`) the export is calibrated
#: on: their largest activation per channel at each smoothed GEMM input.
CALIBRATION_PARAGRAPHS = 256
#: Tokens of each calibration paragraph the calibration reads (the stage's default truncation).
CALIBRATION_MAX_TOKENS = 128


def export_supported(src: Path) -> str | None:
    """None when ``src`` (a sentence-transformers folder) can be exported, else the reason."""
    try:
        cfg = json.loads((src / "config.json").read_text())
        modules = json.loads((src / "modules.json").read_text())
    except (OSError, ValueError) as exc:
        return f"cannot read its config.json/modules.json ({exc})"
    if cfg.get("model_type") != "bert" or cfg.get("hidden_act", "gelu") != "gelu":
        return f"it is a {cfg.get('model_type')!r} model; the ONNX export covers BERT models (like minilm)"
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        return "it uses relative position embeddings"
    if not (src / "model.safetensors").exists() or not (src / "tokenizer.json").exists():
        return "it has no model.safetensors or tokenizer.json"
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k not in ("Transformer", "Pooling", "Normalize") for k in kinds):
        return f"its modules are {kinds}; the export covers Transformer + mean Pooling (+ Normalize)"
    pooling = next(m for m in modules if m.get("type", "").endswith("Pooling"))
    try:
        pcfg = json.loads((src / pooling.get("path", "") / "config.json").read_text())
    except (OSError, ValueError):
        pcfg = {}
    if not pcfg.get("pooling_mode_mean_tokens") or any(
            v for k, v in pcfg.items() if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens"):
        return "it does not use mean pooling"
    return None


def build_graph(src: Path, smooth: dict[str, np.ndarray] | None = None):
    """The ONNX model (fp32) of a BERT sentence-transformers folder: token ids in, L2-normalised
    mean-pooled sentence embeddings out.

    ``smooth`` maps the input of a GEMM (:func:`smooth_points`) to per-channel scales ``s``: that
    input is divided by ``s`` and the rows of the GEMM's weight multiplied by it (SmoothQuant,
    Xiao et al. 2022), which computes the same function in float but moves the activation's outlier
    channels into the weights, where int8 quantises them per channel.

    It takes no attention mask: every text of a batch must have the same number of tokens (no
    padding), which is how :class:`OnnxEmbedder` batches. A padded batch would be wrong.
    """
    onnx = require("onnx", "semantic-lite")
    st_np = require("safetensors.numpy", "semantic-lite")
    from onnx import TensorProto, helper, numpy_helper

    cfg = json.loads((src / "config.json").read_text())
    w = st_np.load_file(str(src / "model.safetensors"))
    w = {k.removeprefix("bert."): v for k, v in w.items()}
    hidden, heads, layers = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    eps = float(cfg.get("layer_norm_eps", 1e-12))
    inits: list = []
    nodes: list = []

    def const(name: str, arr) -> str:
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    smooth = smooth or {}

    def weight(prefix: str, point: str) -> np.ndarray:
        # torch Linear stores (out, in); MatMul wants (in, out)
        wt = w[f"{prefix}.weight"].T
        if point in smooth:
            wt = wt * smooth[point][:, None].astype(np.float32)
        return np.ascontiguousarray(wt, np.float32)

    def scaled(x: str, point: str) -> str:
        # the GEMM input divided by its smoothing scales (one Mul; the residual keeps ``x``)
        if point not in smooth:
            return x
        return node("Mul", [x, const(f"{point}.inv_s", (1.0 / smooth[point]).astype(np.float32))], f"{point}_s")

    def linear(x: str, prefix: str, name: str, point: str | None = None) -> str:
        wt = const(f"{prefix}.wT", weight(prefix, point or ""))
        return node("Add", [node("MatMul", [x, wt], f"{name}_mm"), const(f"{prefix}.b", w[f"{prefix}.bias"])], name)

    def layer_norm(x: str, prefix: str, name: str) -> str:
        return node("LayerNormalization", [x, const(f"{prefix}.g", w[f"{prefix}.weight"]),
                                           const(f"{prefix}.beta", w[f"{prefix}.bias"])], name, axis=-1, epsilon=eps)

    # embeddings: word + position + token type 0, then LayerNorm
    words = node("Gather", [const("word_emb", w["embeddings.word_embeddings.weight"]), "input_ids"], "words")
    seq_len = node("Gather", [node("Shape", ["input_ids"], "ids_shape"), const("one_i", np.array(1, np.int64))],
                   "seq_len")
    positions = node("Range", [const("zero_i", np.array(0, np.int64)), seq_len, "one_i"], "positions")
    pos = node("Gather", [const("pos_emb", w["embeddings.position_embeddings.weight"]), positions], "pos")
    typ = const("type0", w["embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(node("Add", [node("Add", [words, pos], "emb_wp"), typ], "emb_sum"), "embeddings.LayerNorm", "emb")

    const("one_f", np.array(1, np.float32))

    for i in range(layers):
        p = f"encoder.layer.{i}"
        # Q, K and V as three MatMuls of the same input: the int8 export quantises that input once
        # for the three (one DynamicQuantizeLinear, three integer GEMMs) and nothing has to be
        # split or copied; then ORT's MultiHeadAttention (bias, heads, softmax in float). It gets
        # no padding mask: the encoder feeds batches of equal-length texts only, and without a
        # mask ORT runs its flash-attention kernel (v4: 10% less CPU than the masked kernel).
        xs = scaled(x, f"l{i}_qkv_in")
        # the context is linear in V per channel: its smoothing scales divide V's output columns
        # and bias (no extra op)
        ctx_s = smooth.get(f"l{i}_ctx", np.ones(hidden, np.float32)).astype(np.float32)
        for n in ("query", "key", "value"):
            wt = weight(f"{p}.attention.self.{n}", f"l{i}_qkv_in")
            if n == "value":
                wt = np.ascontiguousarray(wt / ctx_s[None, :], np.float32)
            node("MatMul", [xs, const(f"{p}.{n}.wT", wt)], f"l{i}_{n}")
        qkv_b = np.concatenate([w[f"{p}.attention.self.{n}.bias"] / (ctx_s if n == "value" else 1)
                                for n in ("query", "key", "value")]).astype(np.float32)
        nodes.append(helper.make_node(
            "MultiHeadAttention", [f"l{i}_query", f"l{i}_key", f"l{i}_value", const(f"{p}.qkv.b", qkv_b)],
            [f"l{i}_ctx"], name=f"l{i}_attention", domain="com.microsoft", num_heads=heads))
        ctx = f"l{i}_ctx"
        attn = linear(ctx, f"{p}.attention.output.dense", f"l{i}_attn_out", f"l{i}_ctx")
        x = layer_norm(node("Add", [attn, x], f"l{i}_res1"), f"{p}.attention.output.LayerNorm", f"l{i}_ln1")
        h = linear(scaled(x, f"l{i}_ff1_in"), f"{p}.intermediate.dense", f"l{i}_ff1", f"l{i}_ff1_in")
        # exact (erf) GELU, as BERT's "gelu" (ORT fuses this pattern into one Gelu op)
        h = node("Mul", [node("Mul", [h, const(f"l{i}_half", np.array(0.5, np.float32))], f"l{i}_gh"),
                         node("Add", [node("Erf", [node("Div", [h, const(f"l{i}_sqrt2", np.array(np.sqrt(2), np.float32))],
                                                        f"l{i}_gd")], f"l{i}_ge"), "one_f"], f"l{i}_g1")], f"l{i}_gelu")
        out = linear(scaled(h, f"l{i}_ff2_in"), f"{p}.output.dense", f"l{i}_ff2", f"l{i}_ff2_in")
        x = layer_norm(node("Add", [out, x], f"l{i}_res2"), f"{p}.output.LayerNorm", f"l{i}_ln2")

    # mean pooling over the tokens (no padding: all real), then L2 normalisation
    # (sentence-transformers' Pooling + Normalize)
    mean = node("ReduceMean", [x], "mean", axes=[1], keepdims=0)
    norm = node("Max", [node("ReduceL2", [mean], "l2", axes=[1], keepdims=1), "tiny_n"], "l2_c")
    const("tiny_n", np.array(1e-12, np.float32))
    nodes.append(helper.make_node("Div", [mean, norm], ["sentence_embedding"], name="normalize"))

    graph = helper.make_graph(
        nodes, "sentence_embedding",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
                              producer_name="dedupkit", producer_version=str(EXPORT_VERSION))
    onnx.checker.check_model(model)
    return model


def pydoc_paragraphs() -> list[str]:
    """The paragraphs (>= 20 words, whitespace collapsed) of Python's own documentation topics
    (``pydoc_data.topics``, shipped with CPython), in topic order: text that is no evaluation suite,
    present wherever Python is. The export calibrates on the first :data:`CALIBRATION_PARAGRAPHS`;
    ``benchmarks/onnx_error.py`` measures the int8 error on the others."""
    import re

    import pydoc_data.topics as topics

    return [" ".join(p.split()) for k in sorted(topics.topics) for p in re.split(r"\n\s*\n", topics.topics[k])
            if len(p.split()) >= 20]


def smooth_points(layers: int) -> dict[str, str]:
    """The GEMM inputs :func:`build_graph` can smooth, each with the tensor that holds it in the
    unsmoothed graph: per layer the Q/K/V input, the attention context (into the output
    projection), the feed-forward input and the GELU output (into the down projection)."""
    out = {}
    for i in range(layers):
        out[f"l{i}_qkv_in"] = "emb" if i == 0 else f"l{i - 1}_ln2"
        out[f"l{i}_ctx"] = f"l{i}_ctx"
        out[f"l{i}_ff1_in"] = f"l{i}_ln1"
        out[f"l{i}_ff2_in"] = f"l{i}_gelu"
    return out


def smoothing_scales(src: Path, texts: Sequence[str], alpha: float = SMOOTH_ALPHA,
                     floor: bool = True) -> dict[str, np.ndarray]:
    """SmoothQuant scales for every :func:`smooth_points` input of ``src``'s graph, calibrated on
    ``texts``: ``s = a**alpha / w**(1 - alpha)`` per input channel, where ``a`` is the channel's
    largest activation (absolute) over the texts' tokens in the float graph and ``w`` its largest
    weight over the GEMM's outputs (Q, K and V together). With ``floor``, ``s`` is divided by its
    median and raised to 1 at least: channels are only ever shrunk, never amplified, so a channel
    that the calibration text left quiet cannot become the outlier on other text (without the
    floor, two news sentences of mrpc-groups fell to cosine 0.979; with it 0.995).

    Why: ONNX Runtime quantises a GEMM's input per tensor (one scale a batch), and a few channels
    of BERT's activations run 5-15x larger than the rest (MiniLM's channel 99 of the hidden state
    reaches 28 where the median channel reaches 2), so the int8 grid is coarse for every other
    channel; the weights are quantised per output channel and absorb the scale cheaply.
    """
    ort = require("onnxruntime", "semantic-lite")
    tok = require("tokenizers", "semantic-lite")
    st_np = require("safetensors.numpy", "semantic-lite")
    from onnx import TensorProto, helper

    cfg = json.loads((src / "config.json").read_text())
    points = smooth_points(cfg["num_hidden_layers"])
    model = build_graph(src)
    for name in points.values():
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    tokenizer = tok.Tokenizer.from_file(str(src / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(CALIBRATION_MAX_TOKENS)
    amax: dict[str, np.ndarray] = {}
    for enc in tokenizer.encode_batch([str(t).strip() for t in texts]):
        outs = sess.run(list(points.values()), {"input_ids": np.array([enc.ids], np.int64)})
        for k, o in zip(points, outs):
            m = np.abs(o).reshape(-1, o.shape[-1]).max(0)
            amax[k] = np.maximum(amax[k], m) if k in amax else m
    w = {k.removeprefix("bert."): v for k, v in st_np.load_file(str(src / "model.safetensors")).items()}

    def wmax(*names: str) -> np.ndarray:  # torch Linear: (out, in); the largest weight per input channel
        return np.max([np.abs(w[f"{n}.weight"]).max(0) for n in names], 0)

    scales = {}
    for k in points:
        i, kind = k.split("_", 1)
        p = f"encoder.layer.{i[1:]}"
        wm = {"qkv_in": lambda: wmax(*(f"{p}.attention.self.{n}" for n in ("query", "key", "value"))),
              "ctx": lambda: wmax(f"{p}.attention.output.dense"),
              "ff1_in": lambda: wmax(f"{p}.intermediate.dense"),
              "ff2_in": lambda: wmax(f"{p}.output.dense")}[kind]()
        sk = np.maximum(amax[k], 1e-5) ** alpha / np.maximum(wm, 1e-5) ** (1 - alpha)
        if floor:
            sk = np.maximum(sk / np.median(sk), 1.0)
        scales[k] = sk.astype(np.float32)
    return scales


def export_onnx(src: Path, out: Path, quantize: bool = True) -> Path:
    """Write ``out/`` with the float and int8 ONNX models of ``src``, its tokenizer and ``export.json``
    (written last). :func:`dedupkit.embed.onnx_export` makes it once, atomically, in the cache.

    Raises:
        ConfigError: ``src`` is not a model this export covers (:func:`export_supported`).
    """
    onnx = require("onnx", "semantic-lite")
    reason = export_supported(src)
    if reason:
        raise ConfigError(f"cannot export {src} to ONNX: {reason}; use --backend torch")
    out.mkdir(parents=True, exist_ok=True)
    fp32 = out / FP32_FILE
    onnx.save(build_graph(src), str(fp32))
    if quantize:
        quant = require("onnxruntime.quantization", "semantic-lite")
        # onnxruntime.quantization logs advice through the root logger; keep it off stderr.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            # The weights of every GEMM (Q/K/V, attention output, feed-forward), per output
            # channel (per tensor lost up to 0.12 of cosine on some texts); activations are
            # quantised per batch at run time. Softmax attention and the embedding tables stay
            # float (ORT's int8 QAttention, per-tensor weights, fell to 0.978 cosine).
            # SmoothQuant (:func:`smoothing_scales`): the int8 model is quantised from a float
            # graph whose GEMM inputs carry their outlier channels in the weights instead; same
            # function in float. Export v6, on the pydoc paragraphs the calibration did not see
            # (benchmarks/onnx_error.py): cosine to float, worst text 0.976 -> 0.990; pair error
            # p99.9 0.053 -> 0.022, largest 0.077 -> 0.025; for three elementwise Muls more a
            # layer. The float file stays unsmoothed.
            smoothed = out / "model_smoothed.onnx"
            onnx.save(build_graph(src, smoothing_scales(src, pydoc_paragraphs()[:CALIBRATION_PARAGRAPHS])),
                      str(smoothed))
            quant.quantize_dynamic(
                str(smoothed), str(out / MODEL_FILE), op_types_to_quantize=["MatMul"],
                weight_type=quant.QuantType.QInt8, per_channel=True,
                extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT})
            smoothed.unlink()
        finally:
            root.setLevel(level)
    else:
        shutil.copy2(fp32, out / MODEL_FILE)
    shutil.copy2(src / "tokenizer.json", out / "tokenizer.json")
    (out / "export.json").write_text(json.dumps({"source": str(src), "version": EXPORT_VERSION,
                                                 "quantized": "int8-dynamic" if quantize else None,
                                                 "smoothquant": {"alpha": SMOOTH_ALPHA,
                                                                 "calibration": f"pydoc topics, {CALIBRATION_PARAGRAPHS} paragraphs"}
                                                 if quantize else None}))
    return out


class _Sessions:
    """One worker's ONNX Runtime sessions: the int8 export, and the float one made on first use."""

    def __init__(self, export_dir: Path, threads: int, quantized: bool):
        self.export_dir, self.threads, self.quantized = export_dir, threads, quantized
        self._int8 = self._float = None

    def _make(self, file: str):
        ort = require("onnxruntime", "semantic-lite")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # errors only: -q must leave stderr empty
        # Idle threads sleep instead of spinning: on a shared CPU spinning steals the working
        # threads' cores (the same reason dedupkit sets OMP_WAIT_POLICY=PASSIVE for torch).
        opts.add_session_config_entry("session.intra_op.allow_spinning",
                                      os.environ.get("DEDUPKIT_ORT_SPINNING", "0"))
        # ORT fuses residual Add + LayerNormalization into SkipLayerNormalization, whose CPU kernel
        # is scalar: it took 20% of the int8 model's time, Add + LayerNormalization take 5%.
        return ort.InferenceSession(str(self.export_dir / file), opts, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=["SkipLayerNormFusion"])

    def get(self, quantized: bool):
        if quantized and self.quantized:
            if self._int8 is None:
                self._int8 = self._make(MODEL_FILE)
            return self._int8
        if self._float is None:
            self._float = self._make(FP32_FILE)
        return self._float


class OnnxEmbedder:
    """A BERT sentence-transformers model run by ONNX Runtime from its cached int8 export.

    Texts are tokenised with the model's own ``tokenizer.json`` (Hugging Face ``tokenizers``) and
    truncated to ``max_tokens``; texts with the same token count are batched together (no
    padding, so the graph needs no attention mask), at most ``batch_size`` texts and about
    :data:`BATCH_TOKENS` tokens a batch; embeddings come back in input order. Batches of at most
    :data:`FLOAT_MAX_TOKENS` tokens a text run the float export, the rest the int8 one; with
    ``quantized=False`` (``--backend onnx-fp32``) every batch runs the float export.

    Batches run on ``threads`` (``OMP_NUM_THREADS``, else the CPUs this process may use) single-
    threaded sessions side by side, at most :data:`MAX_WORKERS` of them (then each gets several
    threads): small batches on parallel sessions spend no time synchronising threads inside an
    operator.
    """

    def __init__(self, export_dir: Path, key: str, batch_size: int, max_tokens: int, quantized: bool = True,
                 threads: int | None = None):
        tok = require("tokenizers", "semantic-lite")
        threads = (threads or int(os.environ.get("OMP_NUM_THREADS") or 0)
                   or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
        self.workers = max(1, min(threads, MAX_WORKERS))
        per = max(1, threads // self.workers)
        self._pool = [_Sessions(export_dir, per, quantized) for _ in range(self.workers)]
        self.session = self._pool[0].get(True)  # the first session now: a broken export fails at load
        self.tokenizer = tok.Tokenizer.from_file(str(export_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_tokens)
        self.max_tokens = max_tokens
        self.dim = int(self.session.get_outputs()[0].shape[1])
        self.batch_size = batch_size
        self.key = key
        self.device = "cpu"

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (stripped, as sentence-transformers does), truncated to ``max_tokens``.

        A long text is tokenised from a head cut at a space: BERT's tokenizer splits words at
        spaces and never looks across them, so when the head alone fills ``max_tokens`` the ids are
        those of the whole text (else the whole text is tokenised). Tokenising whole 3 KB documents
        cost 1.6 ms of CPU each, 13% of encoding them.
        """
        texts = [str(t).strip() for t in texts]
        cut = self.max_tokens * CUT_CHARS_PER_TOKEN
        heads = []
        for t in texts:
            k = max(t.rfind(" ", 0, cut), t.rfind("\n", 0, cut)) if len(t) > cut else -1
            heads.append(t[:k] if k > 0 else t)
        ids = [e.ids for e in self.tokenizer.encode_batch(heads)]
        redo = [i for i, (h, t) in enumerate(zip(heads, texts)) if len(h) < len(t) and len(ids[i]) < self.max_tokens]
        if redo:
            for i, e in zip(redo, self.tokenizer.encode_batch([texts[i] for i in redo])):
                ids[i] = e.ids
        return ids

    def batches(self, lengths: np.ndarray) -> list[np.ndarray]:
        """Indices of each batch: texts of one token count, longest first, at most ``batch_size``
        texts and about :data:`BATCH_TOKENS` tokens (one text at least)."""
        order = np.argsort(-lengths, kind="stable")
        out = []
        runs = np.flatnonzero(np.diff(lengths[order])) + 1
        for run in np.split(order, runs):
            if not len(run):
                continue
            size = max(1, min(self.batch_size, BATCH_TOKENS // max(1, int(lengths[run[0]]))))
            out.extend(run[a:a + size] for a in range(0, len(run), size))
        return out

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32 L2-normalised embeddings, in input order."""
        out = np.zeros((len(texts), self.dim), np.float32)
        if not len(texts):
            return out
        ids = self.tokenize(texts)
        # Identical token sequences are encoded once: int8 activations are quantised per batch, so
        # the same text in two batches would get two slightly different vectors (and exact copies
        # a cosine below 1, which the keep policies' ranking would see as noise).
        first: dict[tuple[int, ...], int] = {}
        where = np.fromiter((first.setdefault(tuple(i), k) for k, i in enumerate(ids)), np.int64, len(ids))
        if len(first) < len(ids):
            uniq = np.fromiter(first.values(), np.int64, len(first))
            out[:] = self._encode_ids([ids[k] for k in uniq])[np.searchsorted(uniq, where)]
            return out
        return self._encode_ids(ids)

    def _encode_ids(self, ids: list[list[int]]) -> np.ndarray:
        out = np.zeros((len(ids), self.dim), np.float32)
        lengths = np.fromiter((len(i) for i in ids), np.int64, len(ids))
        free: queue.SimpleQueue = queue.SimpleQueue()
        for w in self._pool:
            free.put(w)

        def run(idx: np.ndarray) -> None:
            batch = np.array([ids[i] for i in idx], np.int64)
            w = free.get()
            try:
                out[idx] = w.get(batch.shape[1] > FLOAT_MAX_TOKENS).run(None, {"input_ids": batch})[0]
            finally:
                free.put(w)

        batches = self.batches(lengths)
        if self.workers == 1 or len(batches) == 1:
            for idx in batches:
                run(idx)
        else:
            # ONNX Runtime releases the GIL while it runs: the sessions work side by side
            with ThreadPoolExecutor(self.workers) as ex:
                for f in [ex.submit(run, idx) for idx in batches]:
                    f.result()
        return out
