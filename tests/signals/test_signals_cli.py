"""`policyengine signals eval` and `policyengine signals calibrate` on a small labelled file."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from policyengine.cli import app

ROWS = [
    {"text": "Dear customer, your replacement charger is on its way.", "sentiment": "neutral", "mentions": {"litigation": False},
     "tags": ["outbound"]},
    {"text": "I've had enough. My solicitor will be in touch about the damaged sofa.", "sentiment": "negative",
     "mentions": {"litigation": True}, "tags": ["indirect"]},
    {"text": "I'm not going to sue, I just want the lamp replaced.", "negative": True,
     "mentions": {"litigation": False}, "tags": ["negated"]},
    {"text": "Thanks, that's sorted everything!", "sentiment": "positive", "tags": ["praise"]},
    {"a": "The refund will go to the card ending 4471.", "b": "The refund will go to the card ending 4417.",
     "divergent": True, "tags": ["account"]},
    {"a": "Your refund has been processed.", "b": "Your refund has been processed. It can take 3-5 working days to "
     "show on your statement, and we'll email you when it's done.", "divergent": False, "tags": ["length"]},
]


def _file(tmp_path, rows=ROWS):
    p = tmp_path / "labels.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return p


def test_eval_reports_every_detector_in_json(tmp_path, provider):
    res = CliRunner().invoke(app, ["signals", "eval", "--data", str(_file(tmp_path)), "--format", "json",
                                   "--policy", "policies/support-desk"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["rows"] == 6
    assert report["sentiment"]["n"] == 4 and report["sentiment"]["decision"] == "sentiment < 0.3"
    lit = report["mentions:litigation"]
    assert set(lit) == {"words", "intent", "both"}
    assert lit["intent"]["tp"] == 1 and lit["intent"]["fp"] == 0  # the negated threat is not a mention
    assert lit["words"]["fp"] == 1 and lit["words"]["fn"] == 0
    assert report["divergence"]["n"] == 2 and report["divergence"]["balanced_accuracy"] == 1.0
    assert report["divergence"]["per_tag"]["account"] == {"tp": 1, "fp": 0, "tn": 0, "fn": 0, "correct": 1, "n": 1}


def test_eval_text_output_names_the_metrics(tmp_path, provider):
    res = CliRunner().invoke(app, ["signals", "eval", "--data", str(_file(tmp_path))])
    assert res.exit_code == 0, res.output
    assert "text mentions litigation by intent: balanced accuracy" in res.output
    assert "per tag:" in res.output


def test_calibrate_proposes_thresholds(tmp_path, provider):
    res = CliRunner().invoke(app, ["signals", "calibrate", "--data", str(_file(tmp_path)), "--format", "json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    for key in ("sentiment", "divergence", "mentions:litigation:intent"):
        e = report[key]
        assert e["proposed_balanced_accuracy"] >= e["current_balanced_accuracy"]
        assert 0.0 <= e["proposed"] <= 1.0
    assert report["sentiment"]["rule"].startswith("escalate when sentiment < ")


def test_a_malformed_line_is_exit_2_naming_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "fine", "sentiment": "neutral"}\n{"text": "x", "sentiment": "angry"}\n')
    res = CliRunner().invoke(app, ["signals", "eval", "--data", str(p)])
    assert res.exit_code == 2
    flat = " ".join(res.output.split())  # Rich wraps long paths: compare with whitespace folded
    assert f"{p}:2:" in flat.replace(" ", "") and "sentiment must be one of" in flat


def test_a_label_for_an_undeclared_lexicon_is_exit_2(tmp_path, provider):
    p = _file(tmp_path, [{"text": "refund please", "mentions": {"refunds": True}}])
    res = CliRunner().invoke(app, ["signals", "eval", "--data", str(p)])
    assert res.exit_code == 2
    assert "lexicon 'refunds'" in res.output.replace("\n", "")
