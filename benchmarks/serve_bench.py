"""Serve throughput of the tuned generator: requests/s and p50/p99 latency, batching on vs off.

Builds a run directory whose policy v1 is the committed world base (the model the embedded
default tunes), starts a local Ray bound to 127.0.0.1, deploys ``ipo_ray.serve`` on a free port,
and sends real HTTP requests from concurrent client threads, first with ``@serve.batch`` on, then
off (one ``T2VPolicy.sample`` call per request). The modes alternate for ``--rounds`` rounds so
that a change in machine load hits both. Rewrites the "Serve throughput" section of benchmarks/RESULTS.md.

    python benchmarks/serve_bench.py --requests 64 --concurrency 8
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import update_section  # noqa: E402
from ipo_ray.local_ray import init_local_ray  # noqa: E402

TITLE = "Serve throughput (tiny world model)"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # straight to 127.0.0.1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_run_dir(config: str, base: str, out: Path) -> Path:
    """A run directory whose policy version 1 is the base checkpoint (full weights)."""
    from ipo_ray.config import load_config
    from ipo_ray.policy import T2VPolicy
    from ipo_ray.run_dir import RunDir

    cfg = load_config(config, [f"model.path={Path(base).resolve()}"])
    rd = RunDir(out)
    rd.write_config(cfg)
    policy = T2VPolicy.from_pretrained(cfg.model.path, cfg.model)
    rd.publish(1, policy.policy_state(), {"lora": False, "round": 0, "step": 0, "reason": "serve_bench"})
    return out


def post(url: str, body: dict) -> tuple[int, float, dict]:
    req = urllib.request.Request(url + "/v1/generate", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    try:
        with OPENER.open(req, timeout=600) as r:
            r.read()
            return r.status, time.perf_counter() - t0, dict(r.headers)
    except urllib.error.HTTPError as e:
        e.read()
        return e.code, time.perf_counter() - t0, dict(e.headers)


def load(url: str, prompts: list[str], n: int, concurrency: int, steps: int, fmt: str, seed0: int) -> dict:
    """``n`` requests from ``concurrency`` client threads: wall seconds, latencies, batch sizes."""
    bodies = [{"prompt": prompts[i % len(prompts)], "seed": seed0 + i, "steps": steps, "format": fmt}
              for i in range(n)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda b: post(url, b), bodies))
    wall = time.perf_counter() - t0
    codes = [c for c, _, _ in results]
    if any(c != 200 for c in codes):
        raise RuntimeError(f"non-200 responses: {sorted(set(codes))}")
    return {"wall_s": wall, "latency_s": [t for _, t, _ in results],
            "batch": [int(h.get("X-Batch-Size", h.get("x-batch-size", 1))) for _, _, h in results]}


def summarize(parts: list[dict]) -> dict:
    lat = np.concatenate([p["latency_s"] for p in parts])
    sizes = np.concatenate([p["batch"] for p in parts])
    wall = sum(p["wall_s"] for p in parts)
    return {"requests": int(lat.size), "wall_s": wall, "rps": lat.size / wall,
            "p50_ms": float(np.percentile(lat, 50) * 1e3), "p99_ms": float(np.percentile(lat, 99) * 1e3),
            "mean_batch": float(sizes.mean()), "max_batch": int(sizes.max())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "world-tiny.yaml"))
    ap.add_argument("--base", default=str(ROOT / "assets" / "world-base"))
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2, help="alternate on/off this many times (requests split evenly)")
    ap.add_argument("--steps", type=int, default=None, help="default: the config's sampling.steps")
    ap.add_argument("--format", default="mp4", choices=["mp4", "gif", "npy"])
    ap.add_argument("--max-batch-size", type=int, default=8)
    ap.add_argument("--batch-wait-timeout-s", type=float, default=0.05)
    ap.add_argument("--cpus", type=float, default=float(os.cpu_count() or 1), help="CPUs (torch threads) per replica")
    ap.add_argument("--no-write", action="store_true", help="print, do not rewrite RESULTS.md")
    args = ap.parse_args(argv)

    import ray
    from ray import serve

    from ipo_ray.config import load_config
    from ipo_ray.serve import deploy
    from ipo_ray.world import splits

    cfg = load_config(args.config)
    steps = args.steps or cfg.sampling.steps
    prompts = list(splits()["train"])
    load_before = os.getloadavg()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        run_dir = make_run_dir(args.config, args.base, Path(tmp) / "run")
        init_local_ray(num_cpus=max(1, int(np.ceil(args.cpus))), include_dashboard=False, log_to_driver=False)
        port = free_port()
        parts: dict[str, list[dict]] = {"on": [], "off": []}
        loads: dict[str, list[float]] = {"on": [], "off": []}
        per_round = max(1, args.requests // args.rounds)
        try:
            for r in range(args.rounds):
                for mode in ("on", "off"):
                    url = deploy(str(run_dir), host="127.0.0.1", port=port, serve_overrides={
                        "batching": mode == "on", "max_batch_size": args.max_batch_size,
                        "max_ongoing_requests": max(32, args.max_batch_size),
                        "batch_wait_timeout_s": args.batch_wait_timeout_s, "num_cpus": args.cpus,
                        "torch_threads": max(1, int(round(args.cpus)))})
                    load(url, prompts, args.concurrency, args.concurrency, steps, args.format, 900_000)  # warm-up
                    parts[mode].append(load(url, prompts, per_round, args.concurrency, steps, args.format,
                                            r * per_round))
                    loads[mode].append(os.getloadavg()[0])
                    print(mode, r, json.dumps(summarize(parts[mode][-1:])), flush=True)
        finally:
            serve.shutdown()
            ray.shutdown()
        rows = {mode: summarize(p) for mode, p in parts.items()}
    load_after = os.getloadavg()
    elapsed = time.time() - started

    from ipo_ray.policy import T2VPolicy

    params = T2VPolicy.from_pretrained(args.base).num_parameters()
    cmd = "python benchmarks/serve_bench.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    on, off = rows["on"], rows["off"]
    lines = [
        f"Command: `{cmd.strip()}` ({elapsed:.0f} s on this machine, {time.strftime('%Y-%m-%d')}).",
        "",
        f"Model: the committed world base (`assets/world-base`, {params:,} transformer parameters) published as "
        f"policy v1 of a run directory; {cfg.model.frames} frames of {cfg.model.height}x{cfg.model.width}, "
        f"{steps} DDIM steps, guidance {cfg.sampling.guidance_scale} (classifier-free: 2 forward passes per step), "
        f"`{args.format}` output. One replica with {args.cpus:g} CPUs / torch threads; the Serve proxy, the replica "
        f"and {args.concurrency} client threads (real HTTP on 127.0.0.1) share the machine. "
        f"{on['requests']} timed requests per mode, in {args.rounds} alternating rounds (on, off, on, ...), each "
        f"after {args.concurrency} warm-up requests; every request has its own seed, prompts cycle through "
        "world:train, and all share steps/guidance/frames, so a batch is one `sample` call.",
        "",
        "| batching | requests/s | p50 latency (ms) | p99 latency (ms) | mean / max batch |",
        "|---|---|---|---|---|",
        f"| on (max_batch_size {args.max_batch_size}, wait {args.batch_wait_timeout_s:g} s) | {on['rps']:.2f} | "
        f"{on['p50_ms']:.0f} | {on['p99_ms']:.0f} | {on['mean_batch']:.2f} / {on['max_batch']} |",
        f"| off | {off['rps']:.2f} | {off['p50_ms']:.0f} | {off['p99_ms']:.0f} | "
        f"{off['mean_batch']:.2f} / {off['max_batch']} |",
        "",
        f"Batching on / off: {on['rps'] / off['rps']:.2f}x requests/s. With {args.concurrency} clients and "
        "one sampling thread, latency is mostly queueing: a request waits for the batches (or single "
        "samples) ahead of it.",
        "",
        f"Machine load (1-min load average): {load_before[0]:.1f} before; after each round, on "
        f"{', '.join(f'{x:.1f}' for x in loads['on'])}, off {', '.join(f'{x:.1f}' for x in loads['off'])}; "
        f"{load_after[0]:.1f} at the end" + (". Other processes shared the machine's cores, so absolute numbers are noisy. "
                                               if load_before[0] >= 1.0 else " (the benchmark's own processes). ") +
        f"p99 of {on['requests']} requests is close to the maximum.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        update_section(TITLE, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
