"""Fitted classifiers kept on disk, so a restart or a second process loads the logistic
regression its training would produce instead of embedding the training set again.

Fitting the sentiment and litigation classifiers embeds about 8,000 texts: 40-90 s of CPU
on two cores, paid by every process that starts cold (a replica, a CLI run, a test worker).
Loading the cached coefficients takes milliseconds.

Invariants:
- a cached classifier is used only when everything its fit read is unchanged: the training
  rows, the fit's parameters, the embedding model's vectors (a probe sentence's embedding is
  part of the key, so another model, backend or quantisation misses) and the source of this
  package (feature code lives here: any edit misses);
- the files hold arrays only (`numpy.load(..., allow_pickle=False)`): a cache directory
  someone else can write to can corrupt a score, never run code;
- a file that cannot be read is ignored and rewritten; a directory that cannot be written
  costs the next process its fit, never this one its answer;
- `POLICYENGINE_CLASSIFIER_CACHE=off` turns the cache off; another value is the directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression

    from policyengine.signals.embedder import Embedder

ENV_CACHE = "POLICYENGINE_CLASSIFIER_CACHE"
_FORMAT = "logreg-npz-v1"  # part of the key: bump when the file layout changes
_PROBE = "The refund for order 1234 has been sent; I am not happy about the delay."
_FITTED = ("coef_", "intercept_", "classes_", "n_iter_")
_log = logging.getLogger(__name__)


def cache_dir() -> Path | None:
    """`POLICYENGINE_CLASSIFIER_CACHE` (None when it is `off`), else
    `$XDG_CACHE_HOME/policyengine/classifiers`, else `~/.cache/policyengine/classifiers`."""
    env = os.environ.get(ENV_CACHE, "").strip()
    if env.lower() in ("off", "0", "false", "no"):
        return None
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "policyengine" / "classifiers"


@lru_cache(maxsize=1)
def _source_hash() -> str:
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for path in sorted(here.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def embedder_fingerprint(embedder: Embedder) -> str:
    """A hash of the embedder's vector for a fixed probe sentence (rounded to 1e-5, well above
    the ~1e-7 between backends): equal for the same model and settings, different otherwise."""
    import numpy as np

    vec = np.round(np.asarray(embedder.embed([_PROBE])[0], dtype=np.float64), 5)
    return hashlib.sha256(vec.tobytes()).hexdigest()


def cache_key(kind: str, params: Mapping[str, Any], rows: Sequence[Sequence[Any]], embedder: Embedder) -> str:
    """The key of one fit: what is fitted, with which parameters (everything the features and
    the fit read besides the rows), on which rows, over which embeddings, by which code."""
    h = hashlib.sha256()
    head = {"format": _FORMAT, "kind": kind, "params": dict(params), "source": _source_hash(),
            "embedder": embedder_fingerprint(embedder)}
    h.update(json.dumps(head, sort_keys=True, default=repr).encode())
    for row in rows:
        h.update(json.dumps(list(row), default=repr).encode())
        h.update(b"\n")
    return h.hexdigest()


def _load(path: Path, params: Mapping[str, Any]) -> LogisticRegression | None:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in _FITTED}
    except FileNotFoundError:
        return None
    except Exception as e:  # truncated, foreign or unreadable: fit again and overwrite it
        _log.warning("classifier cache: ignoring %s (%s)", path, e)
        return None
    coef, intercept, classes = arrays["coef_"], arrays["intercept_"], arrays["classes_"]
    if (coef.ndim != 2 or coef.dtype.kind != "f" or intercept.shape != (coef.shape[0],)
            or len(classes) != (2 if coef.shape[0] == 1 else coef.shape[0])):
        _log.warning("classifier cache: ignoring %s (not a logistic regression's arrays)", path)
        return None
    clf = LogisticRegression(**params)
    for name, value in arrays.items():
        setattr(clf, name, value)
    clf.n_features_in_ = int(arrays["coef_"].shape[1])
    return clf


def _save(path: Path, clf: LogisticRegression) -> None:
    import numpy as np

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".fit-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **{name: np.asarray(getattr(clf, name)) for name in _FITTED})
            os.replace(tmp, path)  # readers see the old file or the whole new one
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        _log.warning("classifier cache: could not write %s (%s); the next process fits again", path, e)


def predict_proba(clf: LogisticRegression, features: Any) -> Any:
    """`clf.predict_proba(features)`: the same arithmetic as scikit-learn's (the decision
    `X @ coef_.T + intercept_`, then the logistic function for two classes, softmax for more),
    without its per-call input validation and dataframe detection, which cost ~0.25 ms a call
    against ~0.01 ms for the arithmetic (benchmarks/signals.md). `features` must be a finite
    2-D numeric array the classifier was fitted on (the scorers build it), and `clf` a binary or
    multinomial fit (the scorers' lbfgs fits; scikit-learn >= 1.8 fits no other kind of
    LogisticRegression); equality with scikit-learn on the shipped classifiers is tested
    (tests/signals/test_fitted_proba.py), so a change to their fit that broke it would fail there."""
    import numpy as np
    from scipy.special import expit  # scikit-learn's own logistic function

    x = np.asarray(features)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    # numpy's promotion of x and coef_ (float32 features stay float32 when coef_ is), as in
    # scikit-learn's decision_function, so the probabilities are bit-for-bit its own
    decision = x @ clf.coef_.T + clf.intercept_
    if clf.coef_.shape[0] == 1:
        positive = expit(decision[:, 0])
        return np.stack([1 - positive, positive], axis=1)
    decision -= decision.max(axis=1, keepdims=True)
    np.exp(decision, out=decision)
    decision /= decision.sum(axis=1, keepdims=True)
    return decision


def fitted(kind: str, constructor: Mapping[str, Any], rows: Sequence[Sequence[Any]], embedder: Embedder,
           fit: Callable[[], LogisticRegression], *, key: Mapping[str, Any] | None = None) -> LogisticRegression:
    """The classifier `fit()` returns for these inputs: loaded from the cache when an identical
    fit is stored, else fitted now and stored. `constructor` is the LogisticRegression's
    arguments (they rebuild it on load); `key` adds whatever else the features read (weights,
    another model's fingerprint); `rows` are the training rows as the features see them."""
    where = cache_dir()
    if where is None:
        return fit()
    path = where / f"{kind}-{cache_key(kind, {**constructor, **(key or {})}, rows, embedder)[:32]}.npz"
    clf = _load(path, constructor)
    if clf is not None:
        return clf
    clf = fit()
    _save(path, clf)
    return clf
