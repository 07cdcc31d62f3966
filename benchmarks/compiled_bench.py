"""Do compiled hot modules pay? CPU per plain chat, pure Python vs the same commit with Cython.

    .venv/bin/pip install cython   # not a dependency of the project: this script only
    .venv/bin/python benchmarks/compiled_bench.py [--rev HEAD] [--pairs 4] [--requests 3200]
        [--modules policyengine/dispatch/dispatcher.py,policyengine/gateway/paths.py,...]

Issue #22 suggests "compiled hot modules where they pay". This measures it: the commit REV is
exported twice with `git archive` (no checkout is touched); in one copy the listed modules are
compiled in place with Cython 3 (`cythonize`, `language_level=3`, `binding=True`: the source as
it is, no type annotations added), and the extension modules shadow their `.py` files. Each copy
then serves plain chats through the app's ASGI call (no HTTP server; the bench policy and the
fake upstream of api_bench.py, the upstream pinned to CPU 1, the measuring process to CPU 0) at
concurrency 32, SQLite NORMAL, and the process CPU time per request is taken over rounds of
`--requests`. Pure and compiled alternate process by process (`--pairs` times), so both see
the same machine; the script prints both medians and their ratio, and a pure-vs-pure control
pair first, so the noise of the harness itself is in the same output.

Everything is imported from the copy: the child puts it first on `sys.path`, drops any
`policyengine` module the benchmark helpers imported, and appends the copy's root to
`policyengine.__path__` so that `policyengine.adapters` / `policyengine.notifier` (installed from
`adapters/` and `notifier/` by pyproject's package-dir) resolve there too, as in mcp_bench.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
DEFAULT_MODULES = (
    "policyengine/dispatch/dispatcher.py,policyengine/gateway/paths.py,policyengine/gateway/call.py,"
    "policyengine/api/routes/chat.py,policyengine/api/http.py,policyengine/store/logger.py,"
    "policyengine/evaluator.py"
)

# The measuring child: one copy of the tree (argv[1]) on sys.path ahead of the editable install, driven by
# inprocess_bench's `_gateway_cpu` (the same loop its gc and tools cases measure with).
CHILD = r'''
import json, os, sys, tempfile
from pathlib import Path
tree, bench_dir, port, n, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
sys.path.insert(0, bench_dir)
import api_bench as ab
import inprocess_bench as ib  # its driver: warm-up, then rounds of 32 concurrent requests, CPU per request
sys.path.insert(0, tree)
for name in [m for m in sys.modules if m == "policyengine" or m.startswith("policyengine.")]:
    del sys.modules[name]
import uvloop
import policyengine
policyengine.__path__.append(tree)
import policyengine.adapters
assert policyengine.adapters.__file__.startswith(tree), policyengine.adapters.__file__
import policyengine.dispatch.dispatcher as probe
from policyengine.api import create_app
from policyengine.settings import SeedKey, Settings
os.sched_setaffinity(0, {0})
work = Path(tempfile.mkdtemp(prefix="pe-compiled-"))
(work / "p").mkdir()
(work / "p" / "bench.policy").write_text(ab.POLICY)
os.environ.update(PE_BENCH_UPSTREAM=f"http://127.0.0.1:{port}/v1", PE_BENCH_TOKEN=ab.TOKEN)
settings = Settings(database_url=f"sqlite:///{work / 'b.db'}", policy_path=[str(work / "p")],
                    sqlite_synchronous="NORMAL", key_cache_ttl_s=30,
                    seed_keys=[SeedKey(token_env="PE_BENCH_TOKEN", tenant="bench", roles=["app"])])
app = create_app(settings)

async def run():
    async with app.router.lifespan_context(app):
        ms = await ib._gateway_cpu(app, "plain", n, rounds, True)  # ms per request, the GC as the app set it
        return [1000 * x for x in ms]

print(json.dumps({"compiled": probe.__file__.endswith(".so"), "us": uvloop.run(run())}))
'''


def cythonize_in_place(tree: Path, modules: list[str]) -> None:
    """Compile `modules` (paths relative to `tree`) to extension modules beside their sources."""
    script = ("import sys\nfrom setuptools import setup\nfrom Cython.Build import cythonize\n"
              f"setup(ext_modules=cythonize({modules!r}, compiler_directives={{'language_level': '3', "
              "'binding': True}, quiet=True), script_args=['build_ext', '--inplace', '-j', '2'])\n")
    subprocess.run([sys.executable, "-c", script], cwd=tree, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    missing = [m for m in modules if not list((tree / m).parent.glob(Path(m).stem + ".*.so"))]
    if missing:
        sys.exit(f"Cython produced no extension for {missing}")


def measure(tree: Path, port: int, n: int, rounds: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(tree), str(HERE), str(port), str(n), str(rounds)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--requests", type=int, default=3200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--modules", default=DEFAULT_MODULES)
    a = ap.parse_args()
    try:
        import Cython  # noqa: F401
    except ImportError:
        sys.exit("Cython is not installed: .venv/bin/pip install cython (this script only)")
    sys.path.insert(0, str(HERE))
    import api_bench as ab
    from mcp_bench import export_rev  # git archive of a commit into a directory

    tmp = Path(tempfile.mkdtemp(prefix="pe-compiled-bench-"))
    pure = export_rev(a.rev, tmp / "pure")
    compiled = export_rev(a.rev, tmp / "compiled")
    modules = [m.strip() for m in a.modules.split(",") if m.strip()]
    cythonize_in_place(compiled, modules)
    port = ab.free_port()
    up = subprocess.Popen(["taskset", "-c", "1", sys.executable, ab.__file__, "--upstream", "--port", str(port)],
                          start_new_session=True)
    ab.wait_port(port, up)
    try:
        control = [measure(pure, port, a.requests, a.rounds)["us"] for _ in range(2)]
        res: dict[str, list[float]] = {"pure": [], "compiled": []}
        for _ in range(a.pairs):
            for side, tree in (("pure", pure), ("compiled", compiled)):
                r = measure(tree, port, a.requests, a.rounds)
                if r["compiled"] != (side == "compiled"):
                    sys.exit(f"the {side} side imported the wrong modules")
                res[side] += r["us"]
    finally:
        up.terminate()
        up.wait(10)
    c0, c1 = statistics.median(control[0]), statistics.median(control[1])
    p, c = statistics.median(res["pure"]), statistics.median(res["compiled"])
    print(f"plain chat through the app's ASGI call, c=32, SQLite NORMAL, {a.rev}, load {ab.loadavg()}")
    print(f"control, pure vs pure: {c0:.1f} vs {c1:.1f} us CPU per request ({c1 / c0:.3f}x)")
    print(f"pure Python: {p:.1f} us CPU per request (median of {len(res['pure'])} rounds x {a.requests})")
    print(f"Cython, {len(modules)} modules: {c:.1f} us ({c / p:.3f}x pure: {(c / p - 1) * 100:+.1f} % CPU)")


if __name__ == "__main__":
    main()
