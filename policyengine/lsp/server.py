"""The Language Server Protocol side of `policyengine lsp` (pygls): stdio, full-text sync.

On didOpen / didChange / didSave the document is checked with the other `.policy` files of its
directory (open documents' unsaved text wins over the disk) and its diagnostics are published:
the checker's code, message, hint and exact range. Hover, definition, completion and formatting
read the last version of the set that parsed (`policyengine.lsp.analysis`); code lenses and the
`policyengine.runRuleTests` command run the `.tests.yaml` cases next to it against the set as edited.

Positions: the checker counts 1-based lines and columns in characters (code points); LSP counts
0-based lines and, in the negotiated position encoding (UTF-16 code units unless the client
offers another), characters. Every position crossing the wire is converted through the
document's position codec, so a column after a `€` or an emoji lands on the same character.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path
from pygls.workspace import PositionCodec

from policyengine.dsl.diagnostics import Diagnostic

from . import analysis

RUN_RULE_TESTS = "policyengine.runRuleTests"  # arguments: [document uri, 0-based line of the rule]

_KIND = {"keyword": types.CompletionItemKind.Keyword, "model": types.CompletionItemKind.Class,
         "lexicon": types.CompletionItemKind.Constant, "field": types.CompletionItemKind.Field}


class PolicyLanguageServer(LanguageServer):
    """A pygls server that keeps, per directory, the index of the policy set last parsed."""

    def __init__(self) -> None:
        super().__init__("policyengine-lsp", "1", text_document_sync_kind=types.TextDocumentSyncKind.Full)
        self.indexes: dict[str, analysis.Index] = {}

    @property
    def codec(self) -> PositionCodec:
        """The position encoding agreed at initialize (UTF-16 unless the client offered another)."""
        return self.workspace.position_codec

    def file_of(self, uri: str) -> str:
        return to_fs_path(uri) or uri

    def sources_for(self, uri: str) -> dict[str, str]:
        """The policy set of the document: its directory's `.policy` files, open ones as edited."""
        file = self.file_of(uri)
        out: dict[str, str] = {}
        folder = Path(file).parent
        if file != uri and folder.is_dir():
            for p in sorted(folder.glob("*.policy")):
                try:
                    out[str(p)] = p.read_text(encoding="utf-8")
                except OSError:
                    continue
        for doc_uri, doc in self.workspace.text_documents.items():
            f = self.file_of(doc_uri)
            if f == file or (f in out):
                out[f] = doc.source
        out[file] = self.workspace.get_text_document(uri).source
        return out

    def test_texts(self, uri: str) -> list[str]:
        """The `.tests.yaml` files next to the document (read on each request: they are small)."""
        folder = Path(self.file_of(uri)).parent
        out = []
        for p in sorted(folder.glob("*.tests.yaml")) if folder.is_dir() else ():
            try:
                out.append(p.read_text(encoding="utf-8"))
            except OSError:
                continue
        return out

    def test_files(self, uri: str) -> list[Any]:
        """The test files next to the document that test its policy set (their `policy:` is the
        document's folder or the document), loaded; files that do not load are left out (`policyengine
        test` reports them)."""
        from policyengine.ci.spec import SpecError, is_test_file, load_test_file

        file = Path(self.file_of(uri))
        folder = file.parent
        out = []
        for p in sorted(f for f in folder.iterdir() if is_test_file(f)) if folder.is_dir() else []:
            try:
                tf = load_test_file(p)
            except (SpecError, OSError):
                continue
            targets = {Path(x) for x in tf.policy}
            if folder.resolve() in targets or file.resolve() in targets:
                out.append(tf)
        return out

    def examples(self, uri: str) -> analysis.ExampleRun | None:
        """The document's tests run against its set as edited; None without tests or when the set
        does not compile."""
        files = self.test_files(uri)
        return analysis.run_examples(self.sources_for(uri), files) if files else None

    def lines_of(self, file: str) -> list[str]:
        """The lines of `file`: an open document's as edited, else the disk's."""
        for doc_uri, doc in self.workspace.text_documents.items():
            if self.file_of(doc_uri) == file:
                return list(doc.lines)
        try:
            return Path(file).read_text(encoding="utf-8").splitlines(keepends=True)
        except OSError:
            return []

    def to_client(self, lines: list[str], line: int, col: int) -> types.Position:
        """The checker's 1-based (line, column in characters) as an LSP position in client units."""
        line0, col0 = max(line - 1, 0), max(col - 1, 0)
        if line0 < len(lines):
            text = lines[line0].rstrip("\r\n")
            if col0 <= len(text):
                return types.Position(line=line0, character=self.codec.client_num_units(text[:col0]))
            return types.Position(line=line0, character=self.codec.client_num_units(text) + col0 - len(text))
        return types.Position(line=line0, character=col0)

    def from_client(self, uri: str, pos: types.Position) -> tuple[int, int]:
        """An LSP position in client units as the checker's 1-based (line, column in characters)."""
        lines = self.workspace.get_text_document(uri).lines
        if not 0 <= pos.line < len(lines):
            return pos.line + 1, pos.character + 1
        text = lines[pos.line].rstrip("\r\n")
        units = 0
        for i, ch in enumerate(text):
            if units >= pos.character:
                return pos.line + 1, i + 1
            units += self.codec.client_num_units(ch)
        return pos.line + 1, len(text) + 1 + max(pos.character - units, 0)

    def span_range(self, lines: list[str], line: int, col: int, end_line: int, end_col: int) -> types.Range:
        return types.Range(start=self.to_client(lines, line, col), end=self.to_client(lines, end_line, end_col))

    def index(self, uri: str) -> analysis.Index:
        key = str(Path(self.file_of(uri)).parent)
        ix = self.indexes.get(key)
        if ix is None:
            ix = self.indexes[key] = analysis.build_index(self.sources_for(uri))
        return ix

    def refresh(self, uri: str) -> None:
        sources = self.sources_for(uri)
        file = self.file_of(uri)
        new = analysis.build_index(sources)
        key = str(Path(file).parent)
        old = self.indexes.get(key)
        if old is not None:  # keep what the files with a syntax error said last time
            for f, items in old.items.items():
                if f not in new.items and f in sources:
                    new.items[f] = items
                    for k, s in old.symbols.items():
                        if s.file == f:
                            new.symbols.setdefault(k, s)
        self.indexes[key] = new
        lines = list(self.workspace.get_text_document(uri).lines)
        diags = [to_lsp(d, lambda ln, c: self.to_client(lines, ln, c))
                 for d in analysis.diagnostics_for(sources, file)]
        self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=diags))
        # the tests next to it: cases whose action no rule names (W245), on the test file's lines
        for test_file, found in analysis.test_diagnostics(sources, self.test_files(uri)).items():
            tlines = self.lines_of(test_file)
            self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
                uri=from_fs_path(test_file) or test_file,
                diagnostics=[to_lsp(d, lambda ln, c, tl=tlines: self.to_client(tl, ln, c)) for d in found]))


def to_lsp(d: Diagnostic, position: Callable[[int, int], types.Position] | None = None) -> types.Diagnostic:
    """A checker diagnostic as LSP's: the range (one character wide when the checker gives a
    point) through `position` (1-based line, column in characters -> LSP position; without it
    one column is one unit), the code, the message with the hint on its own line, error or warning."""
    line, col = d.line, max(d.col, 1)
    end_line, end_col = (d.end_line or d.line), (d.end_col or col + 1)
    if (end_line, end_col) <= (line, col):
        end_line, end_col = line, col + 1
    pos = position or (lambda ln, c: types.Position(line=max(ln - 1, 0), character=max(c - 1, 0)))
    msg = d.message + (f"\nhint: {d.hint}" if d.hint else "")
    sev = {"error": types.DiagnosticSeverity.Error, "warning": types.DiagnosticSeverity.Warning,
           "info": types.DiagnosticSeverity.Information}[d.severity]
    return types.Diagnostic(range=types.Range(start=pos(line, col), end=pos(end_line, end_col)),
                            message=msg, severity=sev, code=d.code, source="policyengine")


def _line(ls: PolicyLanguageServer, uri: str, line0: int) -> str:
    lines = ls.workspace.get_text_document(uri).lines
    return lines[line0].rstrip("\r\n") if 0 <= line0 < len(lines) else ""


def run_rule_tests(ls: PolicyLanguageServer, uri: str, line0: int) -> dict[str, Any]:
    """What `policyengine.runRuleTests` answers: the rule on 0-based line `line0` of the document,
    the examples that fire it with their status, the pass / fail counts, and the cases that could
    not be run (`unplaced`); `error` instead when there is no rule there, no test or the set does
    not compile."""
    file = ls.file_of(uri)
    ix = ls.index(uri)
    rule = next((it for it in analysis.rules_in(ix, file) if it.span.line - 1 <= line0 <= it.span.end_line - 1), None)
    if rule is None:
        return {"error": f"no rule on line {line0 + 1}"}
    from policyengine.ci.rules import rule_text

    out: dict[str, Any] = {"rule": rule_text(rule), "location": f"{Path(file).name}:{rule.span.line}"}
    if not ls.test_files(uri):
        return {**out, "error": "no .tests.yaml next to this policy tests it"}
    run = ls.examples(uri)
    if run is None:
        return {**out, "error": "the policy set has errors: fix them to run its examples"}
    exs = run.by_rule.get((file, rule.span.line), [])
    passed = sum(1 for e in exs if e.status == "passed")
    return {**out, "examples": [e.as_dict() for e in exs], "passed": passed, "failed": len(exs) - passed,
            "unplaced": [e.as_dict() for e in run.unplaced]}


def make_server() -> PolicyLanguageServer:
    """A server with every feature registered (not yet started)."""
    server = PolicyLanguageServer()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: PolicyLanguageServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.refresh(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: PolicyLanguageServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.refresh(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: PolicyLanguageServer, params: types.DidSaveTextDocumentParams) -> None:
        ls.refresh(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: PolicyLanguageServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=params.text_document.uri,
                                                                            diagnostics=[]))

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(ls: PolicyLanguageServer, params: types.HoverParams) -> types.Hover | None:
        uri = params.text_document.uri
        line, col = ls.from_client(uri, params.position)
        run = ls.examples(uri)
        covered = None if run is None else {k: [e.name for e in v] for k, v in run.by_rule.items()}
        text = analysis.hover_text(ls.index(uri), ls.file_of(uri), _line(ls, uri, line - 1), line, col, covered)
        if text is None:
            return None
        return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text))

    @server.feature(types.TEXT_DOCUMENT_DEFINITION)
    def definition(ls: PolicyLanguageServer, params: types.DefinitionParams) -> types.Location | None:
        uri = params.text_document.uri
        line, col = ls.from_client(uri, params.position)
        sym = analysis.definition(ls.index(uri), _line(ls, uri, line - 1), col)
        if sym is None:
            return None
        sp = sym.span
        target = from_fs_path(sym.file) if sym.file.startswith("/") else uri
        lines = ls.lines_of(sym.file) if sym.file.startswith("/") else list(ls.workspace.get_text_document(uri).lines)
        return types.Location(uri=target or uri, range=ls.span_range(lines, sp.line, sp.col, sp.end_line, sp.end_col))

    @server.feature(types.TEXT_DOCUMENT_CODE_LENS)
    def code_lens(ls: PolicyLanguageServer, params: types.CodeLensParams) -> list[types.CodeLens]:
        """Above each rule: how many `.tests.yaml` examples fire it and how many pass (none without
        test files or while the set does not compile); clicking runs them (`runRuleTests`)."""
        uri = params.text_document.uri
        run = ls.examples(uri)
        if run is None:
            return []
        file = ls.file_of(uri)
        lines = list(ls.workspace.get_text_document(uri).lines)
        out = []
        for it in analysis.rules_in(ls.index(uri), file):
            sp = it.span
            exs = run.by_rule.get((file, sp.line), [])
            out.append(types.CodeLens(
                range=ls.span_range(lines, sp.line, sp.col, sp.line, sp.col),
                command=types.Command(title=analysis.lens_title(exs), command=RUN_RULE_TESTS,
                                      arguments=[uri, sp.line - 1])))
        return out

    @server.command(RUN_RULE_TESTS)
    def run_rule_tests_command(ls: PolicyLanguageServer, uri: str, line: int) -> dict[str, Any]:
        """Run the examples of the rule at [uri, 0-based line] (other arguments: invalid params);
        the result is returned and summed up in a window/showMessage (each failure on its own line
        in window/logMessage)."""
        res = run_rule_tests(ls, uri, line)
        if "error" in res:
            ls.window_show_message(types.ShowMessageParams(type=types.MessageType.Warning,
                                                           message=f"policyengine: {res['error']}"))
            return res
        n = len(res["examples"])
        summary = (f"{res['location']} `{res['rule']}`: {n} example(s), {res['passed']} pass, {res['failed']} fail")
        for e in res["examples"]:
            if e["status"] != "passed":
                why = "; ".join(e["mismatches"]) or e["error"] or e["status"]
                ls.window_log_message(types.LogMessageParams(type=types.MessageType.Warning,
                                                             message=f"{Path(e['file']).name}:{e['line']} "
                                                                     f"{e['name']}: {why}"))
        ls.window_show_message(types.ShowMessageParams(
            type=types.MessageType.Info if res["failed"] == 0 else types.MessageType.Warning, message=summary))
        return res

    @server.feature(types.TEXT_DOCUMENT_COMPLETION)
    def completion(ls: PolicyLanguageServer, params: types.CompletionParams) -> types.CompletionList:
        uri = params.text_document.uri
        items = [types.CompletionItem(label=label, kind=_KIND[kind], detail=kind)
                 for label, kind in analysis.completions(ls.index(uri), analysis.test_fields(ls.test_texts(uri)))]
        return types.CompletionList(is_incomplete=False, items=items)

    @server.feature(types.TEXT_DOCUMENT_FORMATTING)
    def formatting(ls: PolicyLanguageServer, params: types.DocumentFormattingParams) -> list[types.TextEdit]:
        uri = params.text_document.uri
        doc = ls.workspace.get_text_document(uri)
        new = analysis.formatted(doc.source, ls.file_of(uri))
        if new is None or new == doc.source:
            return []
        end = types.Position(line=len(doc.lines), character=0)
        return [types.TextEdit(range=types.Range(start=types.Position(line=0, character=0), end=end), new_text=new)]

    return server


def main() -> None:
    """Serve over stdin / stdout until the client exits."""
    make_server().start_io()
