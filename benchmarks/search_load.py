# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
A bounded load test of the search server: it starts `eclip-serve INDEX` on 127.0.0.1 (a port of its own), runs
`--clients` concurrent clients for `--seconds` (and at most `--max-requests` requests in all), stops the server and
prints one JSON object: requests, errors (any answer but 200, a timeout or a dropped connection, with the first few
named), throughput and latency percentiles, overall and per query kind. From the repository root:

```bash
python -m benchmarks.search_load --index fashion-index --clients 8 --seconds 20
python -m benchmarks.search_load --index fashion-index --clients 4 --seconds 5 --image-share 0.5 --output load.json
```

Queries are real catalogue content: text queries are product titles from the index (a seeded sample) and image
queries upload the products' own photos (`--image-share` of the requests). Traffic goes to the loopback address
only, and every loop ends by itself at its deadline. `--server thread` serves from a thread of this process instead
of a separate one (the tests' short run: no second interpreter to start; the clients then share this process's CPU
time with the server, so its latencies are not the ones to quote).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

HOST = "127.0.0.1"  # never anything but this machine
MAX_ERRORS_NAMED = 5


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def subprocess_server(index: str, model: str | None = None, device: str | None = None,
                      startup_timeout: float = 300.0):
    """`eclip-serve INDEX` in its own process on a free loopback port; yields its URL once `/api/info` answers, and
    ends the process (by its pid) on exit. Its log goes to a temporary file (a pipe nobody reads would block the
    server once its buffer fills), whose tail is shown if the server exits early."""
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "eclip.training.search.serve", index, "--host", HOST, "--port", str(port),
               "--log-level", "warning"]
    command += ["--model", model] if model else []
    command += ["--device", device] if device else []
    url = f"http://{HOST}:{port}"
    with tempfile.TemporaryFile(prefix="eclip-serve-") as log:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.monotonic() + startup_timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"eclip-serve exited with status {process.returncode}: {_tail(log)}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/api/info", timeout=2.0).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"eclip-serve did not answer within {startup_timeout:.0f} s: {_tail(log)}")
                time.sleep(0.2)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _tail(log, size: int = 2000) -> str:
    """The last `size` bytes of the server's log file, as text (read without moving the file offset the server
    writes at)."""
    end = os.fstat(log.fileno()).st_size
    return os.pread(log.fileno(), size, max(0, end - size)).decode("utf-8", errors="replace")


@contextlib.contextmanager
def thread_server(index: str, model: str | None = None, device: str | None = None):
    """The app served from a thread of this process (see the module docstring)."""
    from eclip.training.search.api import CatalogueIndex
    from eclip.training.search.serve import create_app, serve_in_thread

    loaded = CatalogueIndex.load(index, model=model, device=device)
    with serve_in_thread(create_app(loaded), HOST, 0) as url:
        yield url


def query_set(index: str, seed: int, texts: int = 64, images: int = 16) -> tuple[list[str], list[tuple[str, bytes]]]:
    """Seeded samples of the index's product titles (text queries) and photos (image queries, read into memory)."""
    import pandas as pd

    products = pd.read_parquet(os.path.join(index, "products.parquet"), columns=["_title", "_image"])
    rng = random.Random(seed)
    titles = [t for t in products["_title"].dropna().tolist() if t.strip()]
    files = [p for p in products["_image"].dropna().tolist() if os.path.isfile(p)]
    photos = []
    for path in rng.sample(files, min(images, len(files))):
        with open(path, "rb") as handle:
            photos.append((os.path.basename(path), handle.read()))
    return rng.sample(titles, min(texts, len(titles))), photos


async def _client(client, number: int, deadline: float, budget: list, texts, photos, image_share: float, k: int,
                  seed: int, records: list) -> None:
    rng = random.Random(f"{seed}:{number}")
    while time.monotonic() < deadline and budget[0] > 0:
        budget[0] -= 1
        kind = "image" if photos and (not texts or rng.random() < image_share) else "text"
        started = time.perf_counter()
        try:
            if kind == "text":
                response = await client.get("/api/search", params={"q": rng.choice(texts), "k": k})
            else:
                name, data = rng.choice(photos)
                response = await client.post("/api/search/image", files={"file": (name, data)}, data={"k": str(k)})
            error = None if response.status_code == 200 else f"HTTP {response.status_code}: {response.text[:200]}"
        except Exception as exception:  # noqa: BLE001 - any transport failure is an error of the run, counted
            error = f"{type(exception).__name__}: {exception}"
        records.append((kind, time.perf_counter() - started, error))


async def run_load(url: str, clients: int, seconds: float, texts, photos, image_share: float = 0.25, k: int = 10,
                   max_requests: int = 100_000, timeout: float = 60.0, seed: int = 0) -> tuple[list, float]:
    """`clients` concurrent clients against `url` until `seconds` pass or `max_requests` are sent; returns the
    records `(kind, seconds, error or None)` and the wall time."""
    import httpx

    records: list = []
    budget = [max_requests]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        started = time.monotonic()
        deadline = started + seconds
        await asyncio.gather(*(_client(client, n, deadline, budget, texts, photos, image_share, k, seed, records)
                               for n in range(clients)))
        return records, time.monotonic() - started


def latency_summary(ms) -> dict:
    """Latencies in milliseconds as `count`, `p50`, `p95`, `p99`, `mean` and `max` (3 decimals); `{"count": 0}` for
    none. The search studies' one summary (`benchmarks.search` uses it too)."""
    ms = np.asarray(ms, dtype=float)
    if not len(ms):
        return {"count": 0}
    return {"count": int(len(ms)), **{f"p{q}": round(float(np.percentile(ms, q)), 3) for q in (50, 95, 99)},
            "mean": round(float(ms.mean()), 3), "max": round(float(ms.max()), 3)}


def summarize(records: list, wall: float) -> dict:
    errors = [error for _, _, error in records if error]
    ok = [latency for _, latency, error in records if not error]
    by_kind = {kind: {**latency_summary([1000.0 * s for k, s, e in records if k == kind and not e]),
                      "errors": sum(1 for k, _, e in records if k == kind and e)}
               for kind in sorted({kind for kind, _, _ in records})}
    return {"requests": len(records), "errors": len(errors), "first_errors": errors[:MAX_ERRORS_NAMED],
            "wall_seconds": round(wall, 3), "throughput_rps": round(len(ok) / wall, 3) if wall > 0 else None,
            "latency_ms": latency_summary([1000.0 * s for s in ok]), "by_kind": by_kind}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search_load", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, help="an index folder written by eclip-index")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the clients run (default 20)")
    parser.add_argument("--max-requests", type=int, default=100_000, help="requests in all, at most (default 100000)")
    parser.add_argument("--image-share", type=float, default=0.25,
                        help="share of requests that upload a photo (default 0.25; the rest are text queries)")
    parser.add_argument("--k", type=int, default=10, help="results per query (default 10)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a request counts as an error")
    parser.add_argument("--server", choices=("subprocess", "thread"), default="subprocess",
                        help="serve from a separate process (default) or a thread of this one (tests)")
    parser.add_argument("--model", default=None, help="the model folder (default: the one the index records)")
    parser.add_argument("--device", default=None, help="the server's device (default cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="also write the JSON here (written whole or not at all)")
    return parser


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.clients < 1 or args.seconds <= 0 or args.max_requests < 1 or not 0 <= args.image_share <= 1:
        raise SystemExit("--clients and --max-requests must be positive, --seconds above 0, --image-share in [0, 1].")
    from eclip.training.search.layout import read_manifest

    try:
        manifest = read_manifest(args.index)
    except ValueError as error:
        raise SystemExit(f"search_load: {error}") from None
    texts, photos = query_set(args.index, args.seed)
    server = subprocess_server if args.server == "subprocess" else thread_server
    with server(args.index, args.model, args.device) as url:
        records, wall = asyncio.run(run_load(url, args.clients, args.seconds, texts, photos, args.image_share, args.k,
                                             args.max_requests, args.timeout, args.seed))
    from benchmarks.records import command, cpu_name, write_json

    result = {"command": command("benchmarks.search_load", sys.argv[1:] if argv is None else argv),
              "date": datetime.date.today().isoformat(), "cpu": cpu_name(), "cores": os.cpu_count(),
              "index": os.path.abspath(args.index), "products": manifest["products"], "server": args.server,
              "clients": args.clients, "seconds": args.seconds, "image_share": args.image_share, "k": args.k,
              **summarize(records, wall)}
    print(json.dumps(result, indent=2))
    if args.output:
        write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
