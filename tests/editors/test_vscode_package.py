"""The VS Code package (editors/vscode) built and tested with its own toolchain, in a temporary copy:
`npm ci` (the committed lock file), `npm run build` (tsc type check + esbuild bundle), `npm test`
(the TextMate grammar tokenizing the repository's policies/ with vscode-textmate + Oniguruma) and
`npm run package` (vsce writes the .vsix). Skipped when npm is not on PATH; with the npm cache
warm it took 42 s on a shared 2-core machine (the packages come from the cache, `--prefer-offline`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "editors" / "vscode"

needs_npm = pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not on PATH: the VS Code package "
                                "is built with Node's toolchain (npm ci needs registry.npmjs.org or a warm cache)")


def _run(cmd: list[str], cwd: Path) -> str:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    return p.stdout


@needs_npm
def test_npm_ci_build_test_package(tmp_path: Path) -> None:
    # the same layout as the repository: the grammar tests read ../../policies
    work = tmp_path / "editors" / "vscode"
    shutil.copytree(PACKAGE, work, ignore=shutil.ignore_patterns("node_modules", "out", "*.vsix"))
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    _run(["npm", "ci", "--prefer-offline", "--no-audit", "--no-fund"], work)
    _run(["npm", "run", "build"], work)
    assert (work / "out" / "extension.js").stat().st_size > 0
    out = _run(["npm", "test"], work)
    assert "# fail 0" in out and "# pass " in out
    _run(["npm", "run", "package"], work)
    with zipfile.ZipFile(work / "out" / "policyengine-policy.vsix") as z:
        names = set(z.namelist())
        manifest = json.loads(z.read("extension/package.json"))
    assert {"extension/syntaxes/policy.tmLanguage.json", "extension/language-configuration.json",
            "extension/out/extension.js"} <= names
    assert not any(n.startswith("extension/node_modules/") or n.startswith("extension/src/") for n in names)
    [lang] = manifest["contributes"]["languages"]
    assert lang["id"] == "policy" and lang["extensions"] == [".policy"]
    assert manifest["contributes"]["configuration"]["properties"]["policyengine.executable"]["default"] == "policyengine"


def test_package_lock_is_committed_and_matches() -> None:
    lock = json.loads((PACKAGE / "package-lock.json").read_text())
    pkg = json.loads((PACKAGE / "package.json").read_text())
    root = lock["packages"][""]
    assert root.get("dependencies", {}) == pkg["dependencies"]
    assert root.get("devDependencies", {}) == pkg["devDependencies"]
