"""Signals fixtures: the embedding model loads once per test session, offline."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def embedder():
    from policyengine.signals import Embedder

    emb = Embedder()
    emb.load()
    return emb


@pytest.fixture(scope="session")
def scorer(embedder):
    from policyengine.signals import DivergenceScorer

    # the rules and cosine alone: these tests pin the rules' conflicts and reasons; the blend
    # with the answer-pair model is tested in test_pair_model.py
    return DivergenceScorer(embedder, pair_model=None)


@pytest.fixture(scope="session")
def provider(embedder):
    from policyengine.signals import DefaultSignalProvider

    p = DefaultSignalProvider(embedder)
    p.warm_up()
    return p
