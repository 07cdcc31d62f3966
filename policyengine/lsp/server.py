"""The Language Server Protocol side of `policyengine lsp` (pygls): stdio, full-text sync.

On didOpen / didChange / didSave the document is checked with the other `.policy` files of its
directory (open documents' unsaved text wins over the disk) and its diagnostics are published:
the checker's code, message, hint and exact range (LSP positions are 0-based; the checker's
1-based). Hover, definition, completion and formatting read the last version of the set that
parsed (`policyengine.lsp.analysis`).
"""

from __future__ import annotations

from pathlib import Path

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

from policyengine.dsl.diagnostics import Diagnostic

from . import analysis

_KIND = {"keyword": types.CompletionItemKind.Keyword, "model": types.CompletionItemKind.Class,
         "lexicon": types.CompletionItemKind.Constant, "field": types.CompletionItemKind.Field}


class PolicyLanguageServer(LanguageServer):
    """A pygls server that keeps, per directory, the index of the policy set last parsed."""

    def __init__(self) -> None:
        super().__init__("policyengine-lsp", "1", text_document_sync_kind=types.TextDocumentSyncKind.Full)
        self.indexes: dict[str, analysis.Index] = {}

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

    def coverage(self, uri: str) -> dict[tuple[str, int], list[str]] | None:
        """Which tests next to the document fire each rule of its set (as edited); None without tests."""
        from policyengine.ci.spec import SpecError, load_test_file

        folder = Path(self.file_of(uri)).parent
        paths = sorted(folder.glob("*.tests.yaml")) if folder.is_dir() else []
        if not paths:
            return None
        cases = []
        for p in paths:
            try:
                tf = load_test_file(p)
            except (SpecError, OSError):
                continue
            cases.extend((c.name, c.given) for c in tf.tests if not c.skip)
        return analysis.coverage(self.sources_for(uri), cases)

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
        diags = [to_lsp(d) for d in analysis.diagnostics_for(sources, file)]
        self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=diags))


def to_lsp(d: Diagnostic) -> types.Diagnostic:
    """A checker diagnostic as LSP's: 0-based range (one character wide when the checker gives a
    point), the code, the message with the hint on its own line, error or warning."""
    line, col = max(d.line - 1, 0), max(d.col - 1, 0)
    end_line = (d.end_line or d.line) - 1
    end_col = (d.end_col - 1) if d.end_col else col + 1
    if (end_line, end_col) <= (line, col):
        end_line, end_col = line, col + 1
    msg = d.message + (f"\nhint: {d.hint}" if d.hint else "")
    sev = types.DiagnosticSeverity.Error if d.is_error else types.DiagnosticSeverity.Warning
    return types.Diagnostic(range=types.Range(start=types.Position(line=line, character=col),
                                              end=types.Position(line=end_line, character=end_col)),
                            message=msg, severity=sev, code=d.code, source="policyengine")


def _line(ls: PolicyLanguageServer, uri: str, line0: int) -> str:
    lines = ls.workspace.get_text_document(uri).lines
    return lines[line0].rstrip("\r\n") if 0 <= line0 < len(lines) else ""


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
        uri, pos = params.text_document.uri, params.position
        text = analysis.hover_text(ls.index(uri), ls.file_of(uri), _line(ls, uri, pos.line), pos.line + 1,
                                   pos.character + 1, ls.coverage(uri))
        if text is None:
            return None
        return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text))

    @server.feature(types.TEXT_DOCUMENT_DEFINITION)
    def definition(ls: PolicyLanguageServer, params: types.DefinitionParams) -> types.Location | None:
        uri, pos = params.text_document.uri, params.position
        sym = analysis.definition(ls.index(uri), _line(ls, uri, pos.line), pos.character + 1)
        if sym is None:
            return None
        sp = sym.span
        target = from_fs_path(sym.file) if sym.file.startswith("/") else uri
        return types.Location(uri=target or uri, range=types.Range(
            start=types.Position(line=sp.line - 1, character=sp.col - 1),
            end=types.Position(line=sp.end_line - 1, character=sp.end_col - 1)))

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
