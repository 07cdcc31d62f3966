"""The classifier never fails on what a broken upstream might send."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from policyengine.adapters import classify_error

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
bodies = st.one_of(json_values, st.binary(max_size=200), st.text(max_size=200),
                   st.fixed_dictionaries({"error": json_values}),
                   st.fixed_dictionaries({"error": st.fixed_dictionaries({"message": st.text(max_size=80),
                                                                          "code": json_values,
                                                                          "details": st.lists(json_values, max_size=3)})}))
headers = st.dictionaries(st.sampled_from(["retry-after", "Retry-After", "retry-after-ms", "x-amzn-ErrorType",
                                           "content-type", ":exception-type"]), st.text(max_size=40), max_size=3)


@settings(max_examples=300, deadline=None)
@given(status=st.one_of(st.none(), st.integers(100, 599)), headers=headers, body=bodies,
       provider=st.sampled_from([None, "vllm", "ollama", "tgi", "lmstudio", "openai", "bedrock", "vertex"]))
def test_classify_never_raises(status, headers, body, provider):
    c = classify_error(status, headers, body, provider)
    assert c.error_class in ("retry", "failover", "fatal") and c.reason
    assert c.retry_after is None or c.retry_after >= 0
