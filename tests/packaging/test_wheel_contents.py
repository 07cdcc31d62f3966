"""The wheel holds every file the source tree ships: a non-editable install (the container image,
`pip install policyengine-llm`) must find its migrations, templates, grammar and data.

The editable install the tests run from reads the source tree, so a file missing from the
wheel shows up only in a real install; this builds the wheel and compares it with `git ls-files`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAPPING = {"policyengine/": "policyengine/", "adapters/": "policyengine/adapters/", "notifier/": "policyengine/notifier/"}


def _tracked() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the source file list comes from `git ls-files`")
    out = subprocess.run(["git", "ls-files", *MAPPING], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [f for f in out.splitlines() if f and "__pycache__" not in f]


def test_wheel_holds_every_tracked_source_file(tmp_path: Path) -> None:
    files = _tracked()
    # The test venv's own setuptools when it is new enough (seconds), else an isolated build.
    import setuptools

    isolation = [] if int(setuptools.__version__.split(".")[0]) < 68 else ["--no-build-isolation"]
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, check=False, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(tmp_path.glob("policyengine_llm-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    want = {next(dst + f[len(src):] for src, dst in MAPPING.items() if f.startswith(src)) for f in files}
    missing = sorted(w for w in want if w not in names)
    assert missing == [], f"in the source tree but not in the wheel: {missing[:20]}"
    assert "policyengine/store/migrations/env.py" in names
