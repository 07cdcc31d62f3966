"""The embedding model: packaged default, offline, lazy, batched, cached, off the loop."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest

from policyengine.signals import Embedder, EmbeddingModelError, default_model_path, onnx_backend


def test_default_model_is_the_packaged_one_in_site_packages():
    path = default_model_path()
    assert "site-packages" in path and path.endswith("model")
    assert os.path.isfile(os.path.join(path, "model.safetensors"))
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_construction_is_lazy():
    e = Embedder()
    assert not e.loaded  # no model until first use


def test_embeddings_are_normalised_and_match_sentence_transformers():
    embedder = Embedder(quantize=False, cache_size=0)  # fp32: the int8 default is checked below
    texts = ["Your refund has been approved.", "A much longer answer about delivery times and returns.", "hi"]
    vecs = embedder.embed(texts)
    assert vecs.shape == (3, embedder.dimension) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    ref = embedder._model.encode(texts, normalize_embeddings=True)
    assert np.allclose(vecs, ref, atol=1e-5)  # the fast path computes what encode() computes


def test_identical_texts_are_cached_and_batched(embedder):
    e = Embedder(embedder.model_name, cache_size=2)
    e._model = embedder._model  # share the loaded weights
    v = e.embed(["alpha", "beta", "alpha"])
    assert (e.misses, e.hits) == (2, 0)  # duplicate within a batch embedded once
    assert np.array_equal(v[0], v[2])
    e.embed(["alpha"])
    assert e.hits == 1
    e.embed(["gamma"])  # evicts the least recently used ("beta")
    e.embed(["beta"])
    assert e.misses == 4


def test_empty_batch_and_bad_input(embedder):
    assert embedder.embed([]).shape == (0, embedder.dimension)
    with pytest.raises(TypeError, match="sequence of strings"):
        embedder.embed("just a string")
    with pytest.raises(TypeError, match="strings"):
        embedder.embed([1, 2])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        Embedder(cache_size=-1)


def test_missing_model_is_a_clear_error(tmp_path):
    e = Embedder(tmp_path / "no-such-model")
    with pytest.raises(EmbeddingModelError, match="no-such-model"):
        e.embed(["x"])


async def test_aembed_runs_off_the_event_loop(embedder):
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    t = asyncio.create_task(ticker())
    texts = [f"message number {i} about a parcel that never arrived" for i in range(64)]
    e = Embedder(embedder.model_name, cache_size=0)
    e._model = embedder._model
    vecs = await e.aembed(texts)
    t.cancel()
    assert vecs.shape[0] == 64
    assert ticks > 0  # the loop kept running while torch worked


def test_model_is_configurable_by_env(monkeypatch):
    monkeypatch.setenv("POLICYENGINE_EMBEDDING_MODEL", "/models/custom")
    assert Embedder().model_name == "/models/custom"
    monkeypatch.setenv("POLICYENGINE_EMBEDDING_THREADS", "many")
    with pytest.raises(ValueError, match="THREADS"):
        Embedder()


def test_int8_is_the_default_and_close_to_fp32(monkeypatch):
    monkeypatch.delenv("POLICYENGINE_EMBEDDING_QUANTIZE", raising=False)
    assert Embedder().quantize
    monkeypatch.setenv("POLICYENGINE_EMBEDDING_QUANTIZE", "off")
    assert not Embedder().quantize
    monkeypatch.setenv("POLICYENGINE_EMBEDDING_QUANTIZE", "maybe")
    with pytest.raises(ValueError, match="POLICYENGINE_EMBEDDING_QUANTIZE"):
        Embedder()
    texts = ["Your refund has been approved.", "The engineer will visit on Thursday."]
    vf = Embedder(quantize=False, cache_size=0).embed(texts)
    on_torch = Embedder(quantize=True, backend="torch", cache_size=0)
    vt = on_torch.embed(texts)
    assert "quantized" in type(on_torch._model[0].auto_model.encoder.layer[0].attention.self.query).__module__
    assert np.all(np.sum(vt * vf, axis=1) > 0.95)  # same space, slightly different vectors
    if onnx_backend.available():
        on_onnx = Embedder(quantize=True, backend="onnx", cache_size=0)
        assert np.all(np.sum(on_onnx.embed(texts) * vf, axis=1) > 0.98)  # one scale per output channel
        assert on_onnx.backend == "onnx"
    # int8 scales activations per batch, so each text is encoded alone: batching changes nothing
    both = on_torch.embed(texts)
    assert np.array_equal(both, np.vstack([on_torch.embed([t]) for t in texts]))


# -- the ONNX Runtime backend (policyengine/signals/onnx_backend.py) ---------------------------


def test_default_backend_is_onnx_and_gives_the_torch_vectors(embedder):
    assert embedder.backend == "onnx"  # onnxruntime is part of the embeddings extra
    embedder = Embedder(quantize=False, cache_size=0)  # at fp32 the vectors are the same
    # one batch of very different lengths: padding and the mask go through the exported graph
    texts = ["hi", "Your refund has been approved.", "word " * 300, "Le remboursement arrive lundi, £40 / $52."]
    vecs = embedder.embed(texts)
    ref = embedder._model.encode(texts, normalize_embeddings=True)  # sentence-transformers on torch
    assert vecs.dtype == np.float32 and np.allclose(vecs, ref, atol=1e-5)


def test_onnx_graph_is_cached_and_reused(embedder, tmp_path, monkeypatch):
    from policyengine.signals import onnx_backend

    monkeypatch.setenv(onnx_backend.ENV_CACHE, str(tmp_path))
    first = onnx_backend.OnnxEncoder(embedder._model[0], embedder.model_name)
    (cached,) = tmp_path.glob("*.onnx")  # one file, no temporary left behind
    assert not list(tmp_path.glob(".export-*"))

    def no_export(self, auto_model):
        raise AssertionError("the cached graph should have been used")

    monkeypatch.setattr(onnx_backend.OnnxEncoder, "_export", no_export)
    second = onnx_backend.OnnxEncoder(embedder._model[0], embedder.model_name)
    feats = embedder._model[0].tokenizer(["the engineer visits on Thursday"], return_tensors="np")
    assert np.allclose(first.encode(feats), second.encode(feats), atol=1e-6)
    assert cached.is_file()


def test_corrupt_cache_is_exported_again(embedder, tmp_path, monkeypatch):
    from policyengine.signals import onnx_backend

    monkeypatch.setenv(onnx_backend.ENV_CACHE, str(tmp_path))
    key = onnx_backend.cache_key(embedder.model_name)
    (tmp_path / f"{key}.onnx").write_bytes(b"not an onnx graph")
    enc = onnx_backend.OnnxEncoder(embedder._model[0], embedder.model_name)
    feats = embedder._model[0].tokenizer(["refund approved"], return_tensors="np")
    ref = embedder._model.encode(["refund approved"], normalize_embeddings=True)
    assert np.allclose(enc.encode(feats), ref, atol=1e-5)
    assert (tmp_path / f"{key}.onnx").stat().st_size > 1_000_000  # the repaired graph replaced it


def test_unwritable_cache_keeps_the_graph_in_memory(embedder, tmp_path, monkeypatch):
    from policyengine.signals import onnx_backend

    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv(onnx_backend.ENV_CACHE, str(blocker / "sub"))
    enc = onnx_backend.OnnxEncoder(embedder._model[0], embedder.model_name)
    feats = embedder._model[0].tokenizer(["refund approved"], return_tensors="np")
    assert enc.encode(feats).shape == (1, embedder.dimension)


def test_backend_choice_and_errors(monkeypatch):
    with pytest.raises(ValueError, match="backend"):
        Embedder(backend="tensorrt")
    monkeypatch.setenv("POLICYENGINE_EMBEDDING_BACKEND", "torch")
    assert Embedder().requested_backend == "torch"
    monkeypatch.setattr(onnx_backend, "available", lambda: False)
    strict = Embedder(backend="onnx", cache_size=0)
    with pytest.raises(EmbeddingModelError, match="onnxruntime and onnx are not installed"):
        strict.load()  # asked for ONNX, cannot have it: a clear error, no silent fallback


def test_the_packaged_model_takes_the_fast_path(embedder):
    from policyengine.signals.embedder import _is_plain_mean_pooling

    # sentence-transformers 5+ describes pooling by name; the fast path must still see
    # "Transformer -> mean pooling -> Normalize" (else every call went through encode()).
    assert _is_plain_mean_pooling(embedder._model)
