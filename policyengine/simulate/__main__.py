"""`python -m policyengine.simulate --model qwen-72b=vllm --model gemma-27b=ollama:8002 ...`

Starts a SIMULATED fleet on 127.0.0.1 (or `--host`), prints one JSON line describing it
(`{"simulated": true, "models": {name: {url, admin, ...}}}`) and serves until
interrupted. Control each server through its admin URL (see server.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

import orjson

from .fleet import SimFleet

FLAVOURS = ("vllm", "ollama", "tgi", "lmstudio", "openai")


def parse_model(spec: str) -> tuple[str, str, int]:
    """name=flavour[:port]"""
    if "=" not in spec:
        raise argparse.ArgumentTypeError(f"expected NAME=FLAVOUR[:PORT], got {spec!r}")
    name, rest = spec.split("=", 1)
    flavour, _, port = rest.partition(":")
    if flavour not in FLAVOURS:
        raise argparse.ArgumentTypeError(f"unknown flavour {flavour!r} (one of {', '.join(FLAVOURS)})")
    try:
        return name, flavour, int(port) if port else 0
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a number in {spec!r}") from None


async def _main(args: argparse.Namespace) -> None:
    fleet = SimFleet()
    for name, flavour, port in args.model:
        await fleet.add(name, flavour, host=args.host, port=port, keys=args.key or None, context=args.context,
                        chunk_delay=args.chunk_delay, latency=args.latency)
    await fleet.start()
    print(orjson.dumps(fleet.describe()).decode(), flush=True)
    print("SIMULATED model fleet running (canned answers, not real models). Ctrl-C to stop.", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await fleet.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m policyengine.simulate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", type=parse_model, required=True, help="NAME=FLAVOUR[:PORT]")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 inside a container)")
    p.add_argument("--key", action="append", help="accepted bearer key (repeat); default: no auth")
    p.add_argument("--context", type=int, default=None, help="context window in tokens (reject longer prompts)")
    p.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks")
    p.add_argument("--latency", type=float, default=0.0, help="seconds before answering")
    asyncio.run(_main(p.parse_args(argv)))


if __name__ == "__main__":
    main()
