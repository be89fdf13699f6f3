"""Rounds vs semi-online on the same samples budget and hardware, in one invocation.

    python benchmarks/loop_modes.py --rounds 2 --prompts-per-round 16

Measures: wall time of each mode and their ratio, trainer idle fraction, generator videos/s inside
the loop vs a bare in-process sampling loop (Ray overhead), weight-sync seconds and bytes, and the
staleness histogram of semi-online. Writes the "Loop modes" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cpu_share import CpuShare  # noqa: E402
from benchmarks.results import update_section  # noqa: E402


def bare_videos_per_second(cfg, n_batches: int = 3) -> float:
    """The same sampling, in-process, no Ray: the ceiling for one generator actor."""
    import torch

    from ipo_ray.run_dir import load_base_policy

    torch.set_num_threads(max(1, int(cfg.loop.generator_cpus)))
    policy = load_base_policy(cfg)
    s = cfg.sampling
    prompts = ["a red square moves from left to right"] * s.batch_size
    policy.sample(prompts[:2], [0, 1], s.steps, s.guidance_scale)  # warm-up
    t0 = time.time()
    for b in range(n_batches):
        policy.sample(prompts, list(range(b * s.batch_size, (b + 1) * s.batch_size)), s.steps, s.guidance_scale)
    return n_batches * s.batch_size / (time.time() - t0)


def loop_videos_per_second(run_dir: Path) -> tuple[float, float]:
    """Generator throughput inside the loop (rounds mode): videos over the generator actors' summed busy
    time (each video records its share of its batch's sampling time), and videos over the rounds'
    whole generation phase (actor-pool start, judging and writing included)."""
    files = sorted((run_dir / "samples").glob("round_*/*.parquet"))
    t = pa.concat_tables([pq.read_table(f, columns=["generate_seconds"]) for f in files])
    busy = float(np.nansum(t.column("generate_seconds").to_numpy(zero_copy_only=False)))
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    gen = [r["generate_seconds"] for r in recs if r.get("event") == "round" and "generate_seconds" in r]
    return t.num_rows / max(busy, 1e-9), (t.num_rows / sum(gen) if gen else float("nan"))


def summarize(run_dir: Path) -> dict:
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    done = [r for r in recs if r.get("event") == "trainer_done"]
    syncs = [r for r in recs if r.get("event") == "sync"]
    wait = sum(r["wait_seconds"] for r in done)
    busy = sum(r["busy_seconds"] for r in done)
    stream = [r for r in recs if r.get("event") == "stream_done"]
    hist: dict[str, int] = {}
    for r in done:
        for k, v in r["staleness_hist"].items():
            hist[k] = hist.get(k, 0) + v
    return {"idle_fraction": wait / max(wait + busy, 1e-9), "syncs": len(syncs),
            "sync_seconds_mean": float(np.mean([s["seconds"] for s in syncs])) if syncs else 0.0,
            "sync_bytes": syncs[-1]["bytes"] if syncs else 0, "staleness_hist": hist,
            "dropped_stale": stream[0]["dropped_stale"] if stream else 0,
            "rows_trained": sum(r["rows"] - r["dropped_stale"] for r in recs if r.get("event") == "step")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default=str(ROOT / "configs" / "world-tiny.yaml"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--prompts-per-round", type=int, default=16)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--section", default="Loop modes: rounds vs semi-online",
                    help="the RESULTS.md section to write (a second setting keeps the first one's table)")
    args = ap.parse_args(argv)

    from ipo_ray.config import load_config
    from jobs.loop import Loop, init_ray

    # Equal samples in both modes: no extra scoring rollout of the final version (rounds mode only).
    common = [f"loop.rounds={args.rounds}", f"loop.prompts_per_round={args.prompts_per_round}",
              "loop.epochs_per_round=1", "loop.score_final=false", *args.overrides]
    init_ray()
    work = Path(tempfile.mkdtemp(prefix="ipo-ray-bench-"))
    results = {}
    for mode in ("rounds", "semi_online"):
        cfg = load_config(args.config, common + [f"loop.mode={mode}", f"run_dir={work / mode}"])
        t0 = time.time()
        with CpuShare() as cpu:
            summary = Loop(cfg, str(work / mode), log=print).run_all()
        results[mode] = {"wall_seconds": time.time() - t0, **summarize(work / mode),
                         "final_version": summary["final_version"], "cpu": cpu.line()}
    cfg = load_config(args.config, common)
    bare = bare_videos_per_second(cfg)
    in_loop, phase = loop_videos_per_second(work / "rounds")
    r, s = results["rounds"], results["semi_online"]
    body = [
        f"Command: `python benchmarks/loop_modes.py --rounds {args.rounds} --prompts-per-round {args.prompts_per_round}"
        + "".join(f" --set {o}" for o in args.overrides)
        + (f" --section '{args.section}'" if args.section != ap.get_default("section") else "") + "`", "",
        f"Same samples budget in both modes: {args.rounds} rounds x {args.prompts_per_round} prompts x "
        f"{cfg.sampling.num_per_prompt} videos, {cfg.algo.name}, {cfg.train.num_workers} DDP workers, "
        f"{cfg.loop.generator_actors} generator actor(s), on this 2-core machine; torch threads: "
        f"{max(1, int(cfg.loop.generator_cpus))} per generator actor, {max(1, int(cfg.train.cpus_per_worker))} per train "
        f"worker; {cfg.train.updates_per_batch} update(s) per batch of rows.", "",
        "| mode | wall s | trainer idle | rows trained | syncs | sync s (mean) | sync bytes | staleness histogram | dropped stale |",
        "|---|---|---|---|---|---|---|---|---|"]
    for mode, x in results.items():
        body.append(f"| {mode} | {x['wall_seconds']:.0f} | {x['idle_fraction']:.2f} | {x['rows_trained']} | {x['syncs']} | "
                    f"{x['sync_seconds_mean']:.3f} | {x['sync_bytes']:,} | {json.dumps(x['staleness_hist'])} | {x['dropped_stale']} |")
    body += ["", f"Semi-online speed-up over rounds: **{r['wall_seconds'] / s['wall_seconds']:.2f}x** (target 1.8x).",
             f"Generator videos/s per actor: {in_loop:.2f} while sampling inside the loop (rounds mode, the actor's busy "
             f"time) vs {bare:.2f} in a bare in-process loop: Ray overhead {max(0.0, 1 - in_loop / bare) * 100:.0f}% "
             f"(target <= 10%). Over each round's whole generation phase (actor-pool start, judging and Parquet "
             f"writes included): {phase:.2f} videos/s ({max(0.0, 1 - phase / bare) * 100:.0f}% below bare).",
             "Where the cores went (CPU-seconds per role, psutil; `ray` = raylet, GCS, dashboard, Ray Data's and Ray "
             "Train's helper actors, the weight store): "
             + "; ".join(f"{m}: {x['cpu']}" for m, x in results.items()) + "."]
    update_section(args.section, "\n".join(body))
    print("\n".join(body))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
