"""The embedding model's forward pass on ONNX Runtime, exported from the loaded torch model.

Why it exists (benchmarks/signals.md, "Latency"): on one core, ONNX Runtime's fused BERT
kernels run all-MiniLM-L6-v2 about 2.2x faster than torch eager (3.5 vs 7.9 ms of thread
CPU for a 13-token message, 7.0 vs 15.7 ms for 48 tokens) and give the same vectors (max
absolute difference ~1e-7, so the classifiers trained on torch embeddings need nothing).

Guarantees:
* The graph is exported from the weights already loaded (nothing is downloaded), once per
  model and library versions, and cached as a file whose name is a hash of the model
  files' sizes and modification times, the model path, and the torch and onnx versions;
  a changed model or library gets a new export, never a stale graph.
* The cache file is written atomically (temporary file, then rename), so concurrent
  processes never read a half-written graph. A cache that cannot be written (read-only
  home) or a cached graph that does not load falls back to an export held in memory.
* The exported graph includes mean pooling and L2 normalisation: it returns exactly the
  vector the torch path returns. With a `head` (the adapted models of `adapted.py`) the graph
  ends in `head_activation` of the head over the unnormalised mean-pooled vector instead, and
  the head's and adapters' identity (`key_extra`) is part of the cache key.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

ENV_CACHE = "POLICYENGINE_EMBEDDING_CACHE"
_EXPORT_FORMAT = "legacy-opset17-meanpool-l2-v1"  # part of the cache key: bump on any graph change
_log = logging.getLogger(__name__)


def mean_pool(hidden: Any, attention_mask: Any) -> Any:
    """Mean of the token vectors under the attention mask (torch tensors)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def head_activation(logits: Any) -> Any:
    """A one-logit head's sigmoid, shape (batch,); a k-logit head's softmax, shape (batch, k).

    The one activation both backends use for an adapted model's head (torch tensors)."""
    import torch

    if logits.shape[-1] == 1:
        return torch.sigmoid(logits).squeeze(-1)
    return torch.softmax(logits, dim=-1)


def mean_pool_normalize(hidden: Any, attention_mask: Any) -> Any:
    """`mean_pool`, L2-normalised (torch tensors).

    The one pooling both backends use: the torch path calls it per batch and the exported
    graph contains it, so the two cannot drift apart."""
    import torch

    return torch.nn.functional.normalize(mean_pool(hidden, attention_mask), dim=1)


class OnnxUnavailable(RuntimeError):
    """ONNX Runtime (or the exporter) is missing or failed; the message says which and why."""


def available() -> bool:
    """True when onnxruntime and onnx are importable (the exporter needs both)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cache_dir() -> Path:
    """`POLICYENGINE_EMBEDDING_CACHE`, else `$XDG_CACHE_HOME/policyengine/embeddings`,
    else `~/.cache/policyengine/embeddings`."""
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "policyengine" / "embeddings"


def cache_key(model_path: str, extra: str = "") -> str:
    """A hash that changes whenever the model files, `extra` or the exporting libraries change."""
    import onnx
    import torch

    h = hashlib.sha256()
    h.update(f"{_EXPORT_FORMAT}\0{torch.__version__}\0{onnx.__version__}\0{os.path.abspath(model_path)}".encode())
    h.update(f"\0{extra}".encode())
    root = Path(model_path)
    if root.is_dir():
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            st = f.stat()
            h.update(f"\0{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


class OnnxEncoder:
    """Tokenized batch in, unit-normalised float32 mean-pooled embeddings out.

    Built from a loaded sentence-transformers `Transformer` module (its `auto_model` is
    exported) or a bare transformers model; after construction the torch weights are not
    needed for encoding. With `head` (a torch linear module from the pooled vector to logits)
    `encode` returns `head_activation` of its logits per row instead; `key_extra` must
    then identify the head and any change made to the weights, since the cache is keyed on
    the model files. With `int8` the exported graph's weights are quantised to int8, one
    scale per output channel (ONNX Runtime's `quantize_dynamic`), before it is cached under
    its own key: the plain embeddings stay at cosine >= 0.986 to fp32 (one scale per tensor
    moved them to 0.94).
    """

    def __init__(self, transformer_module: Any, model_path: str, *, threads: int = 1,
                 head: Any = None, key_extra: str = "", int8: bool = False) -> None:
        if not available():
            raise OnnxUnavailable("onnxruntime and onnx are not installed (pip install onnxruntime onnx)")
        if head is not None and not key_extra:
            raise ValueError("a head needs a key_extra that identifies it in the graph cache")
        import onnxruntime as ort

        self._input_names = ["input_ids", "attention_mask", "token_type_ids"]
        self._head = head
        self._key_extra = key_extra + (":int8-per-channel" if int8 else "")
        self._int8 = int8
        auto_model = getattr(transformer_module, "auto_model", transformer_module)
        graph = self._graph(auto_model, model_path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads  # 0 = ONNX Runtime's default (all cores)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a corrupt cache file: export again, in memory
            if isinstance(graph, bytes):
                raise OnnxUnavailable(f"ONNX Runtime could not load the exported graph: {exc}") from exc
            _log.warning("cached ONNX graph %s did not load (%s); exporting again", graph, exc)
            fresh = self._export(auto_model)
            self._write_cache(Path(graph), fresh)
            self._session = ort.InferenceSession(fresh, opts, providers=["CPUExecutionProvider"])
        self._wanted = [i.name for i in self._session.get_inputs()]

    def encode(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """Embeddings for one tokenized batch (numpy int arrays from the tokenizer)."""
        import numpy as np

        feeds = {name: np.asarray(features[name], dtype=np.int64) for name in self._wanted}
        (out,) = self._session.run(None, feeds)
        return np.asarray(out, dtype=np.float32)

    # -- the graph -----------------------------------------------------------------

    def _graph(self, auto_model: Any, model_path: str) -> str | bytes:
        """A path to the cached graph, or the graph's bytes when the cache is unusable."""
        try:
            path = cache_dir() / f"{cache_key(model_path, self._key_extra)}.onnx"
        except OSError as exc:
            _log.warning("embedding cache unusable (%s); exporting the ONNX graph in memory", exc)
            return self._export(auto_model)
        if path.is_file():
            return str(path)
        data = self._export(auto_model)
        return str(path) if self._write_cache(path, data) else data

    @staticmethod
    def _write_cache(path: Path, data: bytes) -> bool:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".export-", suffix=".onnx")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            _log.warning("could not cache the ONNX graph at %s (%s); it stays in memory", path, exc)
            return False
        return True

    def _export(self, auto_model: Any) -> bytes:
        data = self._export_fp32(auto_model)
        return self._quantize(data) if self._int8 else data

    @staticmethod
    def _quantize(data: bytes) -> bytes:
        try:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            with tempfile.TemporaryDirectory(prefix="pe-int8-") as tmp:
                src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
                src.write_bytes(data)
                root = logging.getLogger()  # quantize_dynamic logs pre-processing advice on the root logger
                was, root.disabled = root.disabled, True
                try:
                    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)
                finally:
                    root.disabled = was
                return dst.read_bytes()
        except Exception as exc:
            raise OnnxUnavailable(f"quantising the ONNX graph to int8 failed: {exc}") from exc

    def _export_fp32(self, auto_model: Any) -> bytes:
        import torch

        head = self._head

        class _Pooled(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner
                self.head = head

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
                hidden = self.inner(
                    input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
                ).last_hidden_state
                if self.head is None:
                    return mean_pool_normalize(hidden, attention_mask)
                return head_activation(self.head(mean_pool(hidden, attention_mask)))

        wrapper = _Pooled(auto_model).eval()
        sample = torch.tensor([[101, 7592, 2045, 102]], dtype=torch.long)  # any valid ids: axes are dynamic
        args = (sample, torch.ones_like(sample), torch.zeros_like(sample))
        axes = {name: {0: "batch", 1: "tokens"} for name in self._input_names}
        axes["embedding"] = {0: "batch"}
        buf = io.BytesIO()
        try:
            with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    wrapper, args, buf, input_names=self._input_names, output_names=["embedding"],
                    dynamic_axes=axes, opset_version=17, dynamo=False,
                )
        except Exception as exc:
            raise OnnxUnavailable(f"exporting the embedding model to ONNX failed: {exc}") from exc
        return buf.getvalue()
