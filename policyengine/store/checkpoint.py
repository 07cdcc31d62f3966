"""Signed checkpoints: the chains' heads anchored outside the database.

A checkpoint is one JSON object:

    {"format": "policyengine-checkpoint/1", "created_at": "2026-12-02T10:00:00Z",
     "decisions": {"count": N, "head": "<row N's hash>"},
     "approval_events": {"count": M, "head": "<event M's hash>"},
     "mac": "hmac-sha256:<hex>"}

`mac` is HMAC-SHA256, under a key read from the environment (`POLICYENGINE_CHECKPOINT_KEY`
unless named otherwise), of the canonical JSON of every other field. Someone who can write to the
database but does not hold the key can neither forge a checkpoint nor rewrite the log so that an
existing checkpoint still verifies: `verify-log --checkpoint FILE` requires that the log still
holds row N with that hash (and event M), and that the chains continue intact from there.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from policyengine.store.chain import Anchor, VerifyResult
from policyengine.store.rowhash import canonical_json

CHECKPOINT_FORMAT = "policyengine-checkpoint/1"
DEFAULT_KEY_ENV = "POLICYENGINE_CHECKPOINT_KEY"
MIN_KEY_BYTES = 16
_MAC_PREFIX = "hmac-sha256:"


class CheckpointError(ValueError):
    """A checkpoint cannot be made or used: no key, a malformed file, or a signature that does
    not match (forged, altered, or made with another key)."""


def checkpoint_key(env_name: str = DEFAULT_KEY_ENV, environ: Mapping[str, str] | None = None) -> bytes:
    """The signing key from the environment variable `env_name` (at least MIN_KEY_BYTES bytes)."""
    value = (os.environ if environ is None else environ).get(env_name)
    if not value:
        raise CheckpointError(f"the checkpoint key variable {env_name} is not set")
    key = value.encode()
    if len(key) < MIN_KEY_BYTES:
        raise CheckpointError(f"the checkpoint key in {env_name} is {len(key)} bytes; use at least {MIN_KEY_BYTES} "
                              "(e.g. `openssl rand -hex 32`)")
    return key


def _mac(body: Mapping[str, Any], key: bytes) -> str:
    return _MAC_PREFIX + hmac.new(key, canonical_json(dict(body)).encode(), hashlib.sha256).hexdigest()


def make_checkpoint(res: VerifyResult, key: bytes, *, now: datetime | None = None) -> dict[str, Any]:
    """A signed checkpoint of the heads `res` verified. Refuses (CheckpointError) a chain that did
    not verify: a checkpoint vouches that the log was intact up to its heads."""
    if not res.ok:
        raise CheckpointError(f"the log does not verify, no checkpoint made: {res.problem}")
    created = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT, "created_at": created,
        "decisions": {"count": res.head_seq, "head": res.head_hash},
        "approval_events": {"count": res.approval_head_seq, "head": res.approval_head_hash},
    }
    body["mac"] = _mac(body, key)
    return body


def read_checkpoint(text: str | bytes, key: bytes, source: str = "checkpoint") -> list[Anchor]:
    """The anchors of a checkpoint whose signature is checked against `key`. Raises CheckpointError."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise CheckpointError(f"{source} is not JSON: {exc}") from None
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{source} is not a {CHECKPOINT_FORMAT} checkpoint")
    body = {k: v for k, v in obj.items() if k != "mac"}
    mac = obj.get("mac")
    if not isinstance(mac, str) or not hmac.compare_digest(mac, _mac(body, key)):
        raise CheckpointError(f"{source}: signature does not match (the checkpoint was altered or forged, "
                              "or is checked with another key)")
    anchors = []
    where = f"{source} of {body.get('created_at')}"
    for chain in ("decisions", "approval_events"):
        part = body.get(chain)
        if not isinstance(part, dict) or type(part.get("count")) is not int or part["count"] < 0:
            raise CheckpointError(f"{source}: {chain} must hold a count and a head")
        try:
            a = Anchor.parse(f"{part.get('head')}:{part['count']}", source=where)
        except ValueError as exc:
            raise CheckpointError(f"{source}: {chain}: {exc}") from None
        anchors.append(Anchor(head=a.head, seq=a.seq, chain=chain, source=where))  # type: ignore[arg-type]
    return anchors
