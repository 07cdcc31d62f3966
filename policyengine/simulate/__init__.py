"""A SIMULATED OpenAI-compatible model fleet for tests, benchmarks and demos.

These servers behave like vLLM / Ollama / TGI / LM Studio (their real error
bodies) and can be told to fail in every way the dispatcher must survive. They
generate canned text and say so (`system_fingerprint: "simulated"`). See
docs/failover.md, section "Simulated fleet".
"""

from __future__ import annotations

from .faults import Fault, FaultKind, Flavour, error_body
from .fleet import SimFleet
from .server import DEFAULT_ANSWER, RecordedRequest, SimServer

__all__ = ["DEFAULT_ANSWER", "Fault", "FaultKind", "Flavour", "RecordedRequest", "SimFleet", "SimServer", "error_body"]
