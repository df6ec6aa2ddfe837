"""Servers for scripts/bench.py, started with exactly the uvicorn settings of ``bcpay serve``.

    bench_serve.py baseline PORT LOG_LEVEL          a bare Starlette JSON endpoint, GET /baseline
    bench_serve.py bcpay CONFIG PROFILE_OUT         bcpay's app under pyinstrument (``--profile``)

``bcpay serve`` calls ``uvicorn.run(FACTORY, factory=True, host, port, workers,
proxy_headers, forwarded_allow_ips, log_level, server_header=False, access_log=False,
log_config)``, where log_config is uvicorn's default with text logs (the benchmark's); the same
keyword arguments are used here so that the baseline differs from bcpay only
by the application.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def baseline(request: Request) -> Response:
    """The bare endpoint every figure is divided by."""
    return JSONResponse({"status": "ok"})


def baseline_app() -> Starlette:
    """A Starlette app with one JSON route and nothing else."""
    return Starlette(routes=[Route("/baseline", baseline, methods=["GET"])])


def uvicorn_kwargs(port: int, log_level: str) -> dict[str, Any]:
    """What `bcpay serve` passes to uvicorn.run (one worker, no proxy headers)."""
    return {"host": "127.0.0.1", "port": port, "workers": 1, "proxy_headers": False,
            "forwarded_allow_ips": "127.0.0.1", "log_level": log_level, "server_header": False,
            "access_log": False}


def summarise(session: Any, limit: int = 25) -> str:
    """Self time by package and by function from a pyinstrument session (main thread only)."""
    by_package: dict[str, float] = defaultdict(float)
    by_function: dict[str, float] = defaultdict(float)
    total = 0.0

    def walk(frame: Any) -> None:
        nonlocal total
        # Synthetic children ("[self]", "[await]") hold time already in frame.time: not walked,
        # and left out of the subtraction so that their time counts as this frame's own.
        real = [c for c in frame.children if not str(c.function).startswith("[")]
        self_time = max(0.0, frame.time - sum(c.time for c in real))
        path = frame.file_path or ""
        if "site-packages/" in path:
            package = path.split("site-packages/", 1)[1].split("/", 1)[0]
        elif "/bcpay/" in path:
            package = "bcpay." + path.split("/bcpay/", 1)[1].split("/", 1)[0].removesuffix(".py")
        elif path.startswith("<") or not path:
            package = path or "[native]"
        else:
            package = "stdlib:" + Path(path).stem
        by_package[package] += self_time
        by_function[f"{frame.function} ({Path(path).name}:{frame.line_no})"] += self_time
        total += self_time
        for child in real:
            walk(child)

    root = session.root_frame()
    if root is not None:
        walk(root)
    lines = [f"sampled main-thread time {total:.2f} s", "", "self time by package:"]
    for name, value in sorted(by_package.items(), key=lambda kv: -kv[1])[:limit]:
        lines.append(f"  {100 * value / total:5.1f} %  {name}")
    lines += ["", "self time by function:"]
    for name, value in sorted(by_function.items(), key=lambda kv: -kv[1])[:limit]:
        lines.append(f"  {100 * value / total:5.1f} %  {name}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """Run the chosen server until SIGINT."""
    if argv[0] == "baseline":
        uvicorn.run(baseline_app(), **uvicorn_kwargs(int(argv[1]), argv[2]))
        return
    if argv[0] == "bcpay":
        from pyinstrument import Profiler

        from bcpay.config import load_settings
        from bcpay.server.entry import FACTORY

        os.environ["BCPAY_CONFIG"] = argv[1]
        settings = load_settings()
        profiler = Profiler(interval=0.0005, async_mode="disabled")
        profiler.start()
        try:
            uvicorn.run(FACTORY, factory=True, **uvicorn_kwargs(settings.server.port, settings.server.log_level))
        finally:
            session = profiler.stop()
            out = Path(argv[2])
            out.write_text(summarise(profiler.last_session or session) + "\n\n"
                           + profiler.output_text(unicode=True, show_all=False))
        return
    raise SystemExit(f"unknown mode {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
