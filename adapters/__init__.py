"""Provider adapters (installed as `policyengine.adapters`) and upstream error classification."""

from __future__ import annotations

from .base import Adapter, AdapterError, CallOptions, TransportError, UpstreamError
from .classify import (
    Classification,
    Classifier,
    ClassifierRule,
    builtin_rules,
    classify_error,
    load_rules,
    parse_retry_after,
)

__all__ = [
    "Adapter",
    "AdapterError",
    "CallOptions",
    "Classification",
    "Classifier",
    "ClassifierRule",
    "TransportError",
    "UpstreamError",
    "builtin_rules",
    "classify_error",
    "load_rules",
    "parse_retry_after",
]
