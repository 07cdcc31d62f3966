"""`policyengine lsp` driven as a subprocess over stdio with raw JSON-RPC (Content-Length framing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import pytest

pytest.importorskip("pygls")

GOOD = """policy "desk" version 1
model qwen {
  provider openai
  base_url "http://127.0.0.1:9/v1"
}
lexicon litigation ["sue", "lawsuit"]
route default -> qwen
authorize refund when amount < 100 GBP
require approval for refund when amount >= 100 GBP {
  reviewers group "refunds"
  notify email "refunds@example.com"
  timeout 8h -> deny
}
escalate when text mentions litigation {
  on chat review
}
"""
# line 7 (0-based 6): `route default -> qwne`, an undefined model with a did-you-mean hint
BAD = GOOD.replace("route default -> qwen", "route default -> qwne")


class Client:
    """A minimal LSP client: writes framed requests, a reader thread parses framed messages."""

    def __init__(self, cwd: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
        exe = Path(sys.executable).parent / "policyengine"  # the installed console script
        self.proc = subprocess.Popen([str(exe) if exe.exists() else "policyengine", "lsp"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env)
        self.messages: Queue[dict[str, Any]] = Queue()
        self.backlog: list[dict[str, Any]] = []  # messages read while waiting for another, oldest first
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        while True:
            headers: dict[str, str] = {}
            while True:
                line = out.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                k, _, v = line.decode().partition(":")
                headers[k.strip().lower()] = v.strip()
            self.messages.put(json.loads(out.read(int(headers["content-length"]))))

    def send(self, msg: dict[str, Any]) -> None:
        body = json.dumps({"jsonrpc": "2.0", **msg}).encode()
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        self.proc.stdin.flush()

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.send({"method": method, "params": params})

    def request(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        rid = self.next_id
        self.send({"id": rid, "method": method, "params": params})
        msg = self.wait(lambda m: m.get("id") == rid and "method" not in m)
        assert "error" not in msg, msg
        return msg["result"]

    def wait(self, pred: Any, timeout: float = 15) -> dict[str, Any]:
        """The oldest message matching `pred`, from those already read first; the others are kept."""
        for i, m in enumerate(self.backlog):
            if pred(m):
                return self.backlog.pop(i)
        while True:
            try:
                m = self.messages.get(timeout=timeout)
            except Empty:
                raise AssertionError("no such message from the server") from None
            if pred(m):
                return m
            self.backlog.append(m)

    def diagnostics(self, uri: str) -> list[dict[str, Any]]:
        m = self.wait(lambda m: m.get("method") == "textDocument/publishDiagnostics" and m["params"]["uri"] == uri)
        return m["params"]["diagnostics"]

    def close(self) -> None:
        try:
            self.request("shutdown", {})
            self.notify("exit", {})
            self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if f is not None:
                    f.close()


@pytest.fixture
def client(tmp_path: Path):
    c = Client(tmp_path)
    c.request("initialize", {"processId": os.getpid(), "rootUri": tmp_path.as_uri(), "capabilities": {}})
    c.notify("initialized", {})
    yield c
    c.close()


def test_diagnostics_as_you_type_then_cleared(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "desk.policy"
    path.write_text(BAD)
    uri = path.as_uri()
    client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "policy", "version": 1,
                                                            "text": BAD}})
    [d] = client.diagnostics(uri)
    col = BAD.splitlines()[6].index("qwne")
    assert col == 17  # the checker's 7:18
    assert d["range"]["start"] == {"line": 6, "character": col}
    assert d["range"]["end"] == {"line": 6, "character": col + 4}
    assert d["severity"] == 1 and d["code"].startswith("E") and "qwne" in d["message"]
    assert "hint:" in d["message"] and "qwen" in d["message"].split("hint:")[1]
    client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2},
                                             "contentChanges": [{"text": GOOD}]})
    assert client.diagnostics(uri) == []
    # half-typed: a syntax error at the next token, with what was expected
    typing = GOOD.replace("amount < 100 GBP", "amount < ")
    client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 3},
                                             "contentChanges": [{"text": typing}]})
    [d] = client.diagnostics(uri)
    assert d["code"] == "E100" and d["range"] == {"start": {"line": 8, "character": 0},
                                                  "end": {"line": 8, "character": 7}}
    assert "hint: expected" in d["message"]
    # hover still answers from the last version that parsed
    h = client.request("textDocument/hover", {"textDocument": {"uri": uri},
                                              "position": {"line": 6, "character": 18}})
    assert "**model** `qwen`" in h["contents"]["value"]


def test_hover_definition_completion_formatting(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "desk.policy"
    path.write_text(GOOD)
    (tmp_path / "desk.tests.yaml").write_text("tests:\n  - name: a\n    given: {action: refund, fields: "
                                              "{amount: 5 GBP, order_id: o1}}\n    expect: {effect: allow}\n")
    uri = path.as_uri()
    client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "policy", "version": 1,
                                                            "text": GOOD}})
    assert client.diagnostics(uri) == []
    lines = GOOD.splitlines()
    at_model = {"line": 6, "character": lines[6].index("qwen") + 1}
    h = client.request("textDocument/hover", {"textDocument": {"uri": uri}, "position": at_model})
    assert "**model** `qwen`" in h["contents"]["value"] and "desk.policy:2" in h["contents"]["value"]
    loc = client.request("textDocument/definition", {"textDocument": {"uri": uri}, "position": at_model})
    assert loc["uri"] == uri and loc["range"]["start"] == {"line": 1, "character": 6}
    at_lex = {"line": 13, "character": lines[13].index("litigation")}
    loc = client.request("textDocument/definition", {"textDocument": {"uri": uri}, "position": at_lex})
    assert loc["range"]["start"] == {"line": 5, "character": 8}
    h = client.request("textDocument/hover", {"textDocument": {"uri": uri}, "position": at_lex})
    assert "**lexicon** `litigation`: 2 phrases" in h["contents"]["value"]
    at_group = {"line": 9, "character": lines[9].index("refunds")}
    h = client.request("textDocument/hover", {"textDocument": {"uri": uri}, "position": at_group})
    assert "**group** `refunds`" in h["contents"]["value"]
    loc = client.request("textDocument/definition", {"textDocument": {"uri": uri}, "position": at_group})
    assert loc["range"]["start"]["line"] == 9
    h = client.request("textDocument/hover", {"textDocument": {"uri": uri}, "position": {"line": 7, "character": 2}})
    assert "**authorize**" in h["contents"]["value"] and "Precedence 4" in h["contents"]["value"]
    assert "fired by 1 test(s): a" in h["contents"]["value"]  # desk.tests.yaml's refund of 5 GBP
    h = client.request("textDocument/hover", {"textDocument": {"uri": uri}, "position": {"line": 8, "character": 2}})
    assert "**require approval**" in h["contents"]["value"] and "no test" in h["contents"]["value"]
    items = client.request("textDocument/completion", {"textDocument": {"uri": uri}, "position": {"line": 16,
                                                                                                  "character": 0}})
    labels = {i["label"] for i in items["items"]}
    assert {"authorize", "shadow", "qwen", "litigation", "amount", "order_id"} <= labels
    messy = GOOD.replace("route default -> qwen", "route   default   ->   qwen")
    client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2},
                                             "contentChanges": [{"text": messy}]})
    client.diagnostics(uri)
    edits = client.request("textDocument/formatting", {"textDocument": {"uri": uri},
                                                       "options": {"tabSize": 2, "insertSpaces": True}})
    assert len(edits) == 1 and edits[0]["newText"] == GOOD


TESTS_YAML = """tests:
  - name: small refund allowed
    given: {action: refund, fields: {amount: 5 GBP}}
    expect: {effect: allow}
  - name: wrong on purpose
    given: {action: refund, fields: {amount: 50 GBP}}
    expect: {effect: deny}
  - name: big refund held
    given: {action: refund, fields: {amount: 500 GBP}}
    expect: {effect: allow}
"""


def test_code_lens_and_run_rule_tests(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "desk.policy"
    path.write_text(GOOD)
    (tmp_path / "desk.tests.yaml").write_text(TESTS_YAML)
    uri = path.as_uri()
    client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "policy", "version": 1,
                                                            "text": GOOD}})
    assert client.diagnostics(uri) == []
    lenses = client.request("textDocument/codeLens", {"textDocument": {"uri": uri}})
    by_line = {lens["range"]["start"]["line"]: lens["command"] for lens in lenses}
    # route default (line 6), authorize (7), require approval (8), escalate (13): one lens per rule
    assert sorted(by_line) == [6, 7, 8, 13]
    assert by_line[7]["title"] == "▶ 2 examples: 1 pass, 1 fail"
    assert by_line[8]["title"] == "▶ 1 example: 0 pass, 1 fail"
    assert by_line[6]["title"] == "▶ no example fires this rule"
    assert by_line[7]["command"] == "policyengine.runRuleTests" and by_line[7]["arguments"] == [uri, 7]
    res = client.request("workspace/executeCommand", {"command": "policyengine.runRuleTests",
                                                      "arguments": by_line[7]["arguments"]})
    assert res["rule"] == "authorize refund when amount < 100 GBP" and res["location"] == "desk.policy:8"
    assert (res["passed"], res["failed"]) == (1, 1)
    bad = next(e for e in res["examples"] if e["status"] == "failed")
    assert bad["name"] == "wrong on purpose" and bad["line"] == 5 and bad["effect"] == "allow"
    assert bad["mismatches"] == ["effect: expected deny, got allow"]
    log = client.wait(lambda m: m.get("method") == "window/logMessage" and "wrong on purpose" in m["params"]["message"])
    assert "desk.tests.yaml:5" in log["params"]["message"]
    shown = client.wait(lambda m: m.get("method") == "window/showMessage")
    assert "2 example(s), 1 pass, 1 fail" in shown["params"]["message"]
    # the lens follows the document as edited: raise the authorize threshold and all its examples pass
    edited = GOOD.replace("amount < 100 GBP", "amount < 1000 GBP").replace("amount >= 100 GBP", "amount >= 1000 GBP")
    client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2},
                                             "contentChanges": [{"text": edited}]})
    client.diagnostics(uri)
    lenses = client.request("textDocument/codeLens", {"textDocument": {"uri": uri}})
    titles = {lens["range"]["start"]["line"]: lens["command"]["title"] for lens in lenses}
    assert titles[7] == "▶ 3 examples: 2 pass, 1 fail" and titles[8] == "▶ no example fires this rule"
    # a line with no rule, and malformed arguments (invalid params, not a crash)
    res = client.request("workspace/executeCommand", {"command": "policyengine.runRuleTests", "arguments": [uri, 2]})
    assert res["error"] == "no rule on line 3"
    client.next_id += 1
    client.send({"id": client.next_id, "method": "workspace/executeCommand",
                 "params": {"command": "policyengine.runRuleTests", "arguments": ["x"]}})
    err = client.wait(lambda m: m.get("id") == client.next_id)
    assert err["error"]["code"] == -32602


# `€` is one UTF-16 unit, the emoji two (a surrogate pair): the checker's columns count characters
WIDE = GOOD.replace('route default -> qwen', 'route when note == "€😀" -> qwne\nroute default -> qwen')


def test_positions_are_utf16_code_units(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "desk.policy"
    path.write_text(WIDE)
    uri = path.as_uri()
    client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "policy", "version": 1,
                                                            "text": WIDE}})
    [d] = client.diagnostics(uri)
    line = WIDE.splitlines()[6]
    chars = line.index("qwne")
    units = len(line[:chars].encode("utf-16-le")) // 2
    assert units == chars + 1  # the emoji counts twice
    assert d["range"] == {"start": {"line": 6, "character": units}, "end": {"line": 6, "character": units + 4}}
    # a line with no wide character reads the same in both units
    h = client.request("textDocument/hover", {"textDocument": {"uri": uri},
                                              "position": {"line": 7, "character": 18}})
    assert "**model** `qwen`" in h["contents"]["value"]
    fixed = WIDE.replace("-> qwne", "-> qwen")
    client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": 2},
                                             "contentChanges": [{"text": fixed}]})
    assert client.diagnostics(uri) == []
    wide = fixed.splitlines()[6]
    at = len(wide[:wide.index("qwen") + 3].encode("utf-16-le")) // 2  # on the `n` of `qwen`, after the emoji
    assert at == wide.index("qwen") + 4  # read as a character index it would be past the end of the line
    h = client.request("textDocument/hover", {"textDocument": {"uri": uri}, "position": {"line": 6, "character": at}})
    assert "**model** `qwen`" in h["contents"]["value"]
    loc = client.request("textDocument/definition", {"textDocument": {"uri": uri},
                                                     "position": {"line": 6, "character": at}})
    assert loc["range"]["start"] == {"line": 1, "character": 6}


def test_overlap_information_and_uncovered_test_action_on_the_test_file(client: Client, tmp_path: Path) -> None:
    text = GOOD.replace("authorize refund when amount < 100 GBP", "authorize refund when amount < 500 GBP")
    path = tmp_path / "desk.policy"
    path.write_text(text)
    tests = tmp_path / "desk.tests.yaml"
    tests.write_text("tests:\n  - name: typo\n    given:\n      action: refnud\n    expect: {effect: deny}\n")
    uri = path.as_uri()
    client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "policy", "version": 1,
                                                            "text": text}})
    [d] = client.diagnostics(uri)
    # the approval (line 9) meets the authorize (line 8) between 100 and 500 GBP: information, at the later rule
    assert d["code"] == "I243" and d["severity"] == 3 and d["range"]["start"] == {"line": 8, "character": 21}
    assert "e.g. refund with amount = 300 GBP" in d["message"]
    [w] = client.diagnostics(tests.as_uri())
    assert w["code"] == "W245" and w["severity"] == 2
    assert w["range"] == {"start": {"line": 3, "character": 14}, "end": {"line": 3, "character": 20}}
    assert "did you mean `refund`?" in w["message"]
