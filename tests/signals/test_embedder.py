"""The embedding model: packaged default, offline, lazy, batched, cached, off the loop."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest

from policyengine.signals import Embedder, EmbeddingModelError, default_model_path


def test_default_model_is_the_packaged_one_in_site_packages():
    path = default_model_path()
    assert "site-packages" in path and path.endswith("model")
    assert os.path.isfile(os.path.join(path, "model.safetensors"))
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_construction_is_lazy():
    e = Embedder()
    assert not e.loaded  # no model until first use


def test_embeddings_are_normalised_and_match_sentence_transformers(embedder):
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


def test_int8_quantisation_is_close_to_fp32(embedder):
    q = Embedder(quantize=True, cache_size=0)
    texts = ["Your refund has been approved.", "The engineer will visit on Thursday."]
    vq, vf = q.embed(texts), embedder.embed(texts)
    assert "quantized" in type(q._model[0].auto_model.encoder.layer[0].attention.self.query).__module__
    assert np.all(np.sum(vq * vf, axis=1) > 0.85)  # same space, slightly different vectors
