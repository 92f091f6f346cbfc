#!/usr/bin/env python
"""Load test of `realitycheck serve`: N concurrent clients for T seconds, loopback only.

    python benchmarks/load.py --clients 4 --seconds 20                       # starts its own server
    python benchmarks/load.py --clients 32 --seconds 20 --queue 4            # overload: 503s, then recovery
    python benchmarks/load.py --ray --replicas 2 --clients 8 --seconds 30    # the same app on Ray Serve
    python benchmarks/load.py --url http://127.0.0.1:8000 --clients 4        # a server you started

Each client sends one image per request (`POST /v1/predict`, the sample photos in turn) and
sends the next as soon as it has an answer. Reported: throughput (answered 200s per second),
p50/p95/p99 latency of the 200s, answers by status code, requests that got no answer at all
(connection errors, timeouts: the number that must be 0), the server's RSS over time (its
process and children: Ray's replicas are other processes and are counted when Ray runs them
under the server), and a recovery phase: after the load, one client for `--recovery-s` seconds
must get only 200s. Bounded: at most 64 clients, 300 s, and only 127.0.0.1/localhost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
MAX_CLIENTS, MAX_SECONDS = 64, 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (Linux /proc), MB."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for t in Path(f"/proc/{p}/task").iterdir():
                kids = (t / "children").read_text().split()
                todo += [int(k) for k in kids]
        except (OSError, ValueError):
            continue
    return total / 1024


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(q / 100 * (len(v) - 1))))]


async def run_phase(url: str, images: list[tuple[str, bytes]], clients: int, seconds: float, timeout: float,
                    headers: dict) -> dict:
    import httpx

    results: list[tuple[int | str, float]] = []  # (status or error kind, latency)
    deadline = time.perf_counter() + seconds
    sent = 0
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits, headers=headers) as c:
        async def client(k: int):
            nonlocal sent
            i = k
            while time.perf_counter() < deadline:
                name, data = images[i % len(images)]
                i += 1
                t0 = time.perf_counter()
                sent += 1
                try:
                    r = await c.post("/v1/predict", files={"files": (name, data)})
                    results.append((r.status_code, time.perf_counter() - t0))
                    if r.status_code in (429, 503):  # honour the answer, briefly (a load test must not sleep long)
                        await asyncio.sleep(min(0.2, float(r.headers.get("Retry-After", "1"))))
                except httpx.HTTPError as exc:
                    results.append((type(exc).__name__, time.perf_counter() - t0))

        t0 = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(clients)))
        wall = time.perf_counter() - t0
    ok = [lat for s, lat in results if s == 200]
    codes = Counter(str(s) for s, _ in results)
    return {"clients": clients, "seconds": round(wall, 2), "sent": sent, "answered": sum(1 for s, _ in results if isinstance(s, int)),
            "no_answer": sum(1 for s, _ in results if not isinstance(s, int)), "by_code": dict(sorted(codes.items())),
            "throughput_ok_per_s": round(len(ok) / wall, 2) if wall else None,
            "p50_ms": round(1000 * percentile(ok, 50), 1) if ok else None,
            "p95_ms": round(1000 * percentile(ok, 95), 1) if ok else None,
            "p99_ms": round(1000 * percentile(ok, 99), 1) if ok else None}


def start_server(args, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "realitycheck", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--queue", str(args.queue), "--log-level", "warning"]
    if args.workers is not None:  # else the server's default (2; with --ray, replicas x batch size)
        cmd += ["--workers", str(args.workers)]
    if args.weights:
        cmd += ["--weights", args.weights]
    if args.ray:
        cmd += ["--ray", "--replicas", str(args.replicas)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    log = open(args.server_log, "w") if args.server_log else subprocess.DEVNULL
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen | None, limit_s: float) -> float:
    import httpx

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit_s:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode} before it was ready")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server was not ready within {limit_s:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="an already running server on 127.0.0.1 (default: start one)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--recovery-s", type=float, default=5, help="then one client this long: must get only 200s")
    ap.add_argument("--queue", type=int, default=16, help="the started server's --queue")
    ap.add_argument("--workers", type=int, default=None, help="the started server's --workers (default: its own)")
    ap.add_argument("--ray", action="store_true", help="start the server on Ray Serve")
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--weights")
    ap.add_argument("--images", nargs="*", help="image files to send (default: sample_images/)")
    ap.add_argument("--timeout", type=float, default=60, help="client timeout per request, s")
    ap.add_argument("--api-key", help="sent as X-API-Key")
    ap.add_argument("--server-log", help="write the started server's output here")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.seconds <= MAX_SECONDS:
        raise SystemExit(f"--clients 1..{MAX_CLIENTS} and --seconds up to {MAX_SECONDS}")
    paths = [Path(p) for p in args.images] if args.images else sorted((ROOT / "sample_images").glob("*.jpg"))
    images = [(p.name, p.read_bytes()) for p in paths]
    proc = None
    if args.url:
        host = urlparse(args.url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("loopback only: --url must be on 127.0.0.1 or localhost")
        url = args.url.rstrip("/")
    else:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(args, port)
    out = {"url": url, "ray": args.ray, "replicas": args.replicas if args.ray else None, "queue": args.queue,
           "workers": args.workers, "images": [n for n, _ in images], "cpus": os.cpu_count()}
    rss: list[tuple[float, float]] = []
    stop = False
    try:
        out["ready_s"] = round(wait_ready(url, proc, 300 if args.ray else 120), 1)
        headers = {"X-API-Key": args.api_key} if args.api_key else {}

        async def sampled():
            nonlocal stop
            t0 = time.perf_counter()

            async def sampler():
                while not stop:
                    if proc is not None:
                        rss.append((round(time.perf_counter() - t0, 1), round(tree_rss_mb(proc.pid), 1)))
                    await asyncio.sleep(1.0)

            task = asyncio.create_task(sampler())
            load = await run_phase(url, images, args.clients, args.seconds, args.timeout, headers)
            recovery = await run_phase(url, images, 1, args.recovery_s, args.timeout, headers)
            stop = True
            await task
            return load, recovery

        out["load"], out["recovery"] = asyncio.run(sampled())
        out["rss_mb_over_time"] = rss
        if rss:
            out["rss_mb_start_peak_end"] = [rss[0][1], max(r for _, r in rss), rss[-1][1]]
        out["recovered"] = set(out["recovery"]["by_code"]) == {"200"}
        out["every_request_answered"] = out["load"]["no_answer"] == 0 and out["recovery"]["no_answer"] == 0
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                out["server_exit_code"] = proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out["server_exit_code"] = "killed after 60 s"
    print(json.dumps({k: v for k, v in out.items() if k != "rss_mb_over_time"}, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
