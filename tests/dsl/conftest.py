from __future__ import annotations

import pytest

from policyengine.dsl import load_policy_set
from policyengine.evaluator import CompiledPolicy

from .helpers import POLICIES


@pytest.fixture(scope="session")
def support_desk() -> CompiledPolicy:
    return load_policy_set([POLICIES / "support-desk"])
