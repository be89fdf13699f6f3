"""Pretrain several world-base variants side by side (one process each, sharing a GPU when there is
one), then measure each the way ``benchmarks/base_model.py`` does: acceptance over ``--seeds`` seeds
per train / held-out prompt, the per-prompt histogram and the share of prompts strictly between 10%
and 90% (the foundation issue's target: >= 70% of train prompts, overall 20-60%).

A short calibration run of every variant at once sets the step count so that each one finishes its
cosine schedule inside ``--minutes``. Each checkpoint is written under ``--out/NAME`` (and as
``NAME.tar.gz``), its measurement in ``--out/sweep.json``.

  python benchmarks/pretrain_sweep.py --minutes 7 --out /tmp/sweep \\
      --variant 'f40:pretrain.flawed_fraction=0.4' --variant 'f40-shape:pretrain.flawed_fraction=0.4,pretrain.shape_pairs=8,pretrain.shape_weight=2'

Measure checkpoints made elsewhere (e.g. by staged ``ipo-ray pretrain`` runs) the same way, without pretraining:

  python benchmarks/pretrain_sweep.py --measure assets/world-base /tmp/cur-a2 --out /tmp/measured
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ipo_ray.evaluate import summarize  # noqa: E402
from ipo_ray.policy import T2VPolicy  # noqa: E402
from ipo_ray.world import ACCEPT, judge, splits  # noqa: E402
from benchmarks.learning import shape_group  # noqa: E402

SEED_OFFSET = 10_000  # the eval entrypoint's seeds (ipo_ray.evaluate), never a pretraining seed


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, sets = text.partition(":")
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"--variant: {text!r} needs NAME:key=value,key=value (NAME in letters, digits, - and _)")
    return name, [s for s in sets.split(",") if s]


def launch(variants, common: list[str], out: Path, threads: int, extra: list[str]) -> list[subprocess.Popen]:
    procs = []
    for name, sets in variants:
        args = [sys.executable, str(ROOT / "jobs" / "pretrain.py"), "--config", str(ROOT / "configs" / "world-tiny.yaml"),
                "--out", str(out / name)]
        for s in common + sets + extra:
            args += ["--set", s]
        log = open(out / f"{name}.log", "a")
        env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT))
    return procs


def wait(procs) -> None:
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(f"pretraining failed: {' '.join(p.args)} (see its .log)")


def by_shape(per_prompt: dict[str, float]) -> dict[str, float]:
    """Mean per-prompt acceptance per shape group (circle, square, two-object: ``benchmarks.learning.shape_group``,
    the groups of the learning rows)."""
    groups: dict[str, list[float]] = {}
    for p, a in per_prompt.items():
        groups.setdefault(shape_group(p), []).append(a)
    return {g: round(float(np.mean(v)), 4) for g, v in sorted(groups.items())}


@torch.no_grad()
def measure(path: Path, seeds: int, steps: int, guidance: float, device: torch.device) -> dict:
    policy = T2VPolicy.from_pretrained(str(path)).to(device)
    res = {}
    for split, prompts in (("train", splits()["train"]), ("heldout", splits()["heldout"])):
        jobs = [(p, SEED_OFFSET + s) for p in prompts for s in range(seeds)]
        scores = []
        for i in range(0, len(jobs), 512):
            chunk = jobs[i:i + 512]
            frames, _ = policy.sample([p for p, _ in chunk], [s for _, s in chunk], steps, guidance)
            scores += [judge(f, p) for (p, _), f in zip(chunk, frames)]
        s = summarize(np.asarray(scores), [p for p, _ in jobs])  # the eval entrypoint's numbers
        acc = (np.asarray(scores) >= ACCEPT).reshape(len(prompts), seeds).mean(axis=1)
        res[split] = {"videos": s["n"], "acceptance": round(s["acceptance"], 4), "mean_score": round(s["mean_score"], 4),
                      "in_range": round(s["frac_prompts_strictly_between_10_90"], 3),
                      "histogram": list(s["per_prompt_hist"].values()),
                      "per_prompt": {p: float(a) for p, a in zip(prompts, acc)}}
        res[split]["by_shape"] = by_shape(res[split]["per_prompt"])
    return res


def measure_only(paths: list[str], a) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for path in paths:  # all checked before the first (minutes-long) measurement
        if not (Path(path) / "transformer").is_dir():
            raise SystemExit(f"--measure: {path} is not a world base checkpoint (no transformer/ in it)")
    result = {}
    for path in paths:
        m = measure(Path(path), a.seeds, a.steps, a.guidance_scale, device)
        result[path] = m
        print(path, {k: {x: m[k][x] for x in ("acceptance", "in_range", "histogram", "by_shape")}
                     for k in ("train", "heldout")}, flush=True)
        (Path(a.out) / "measured.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", action="append", default=[], help="NAME:key=value,key=value")
    ap.add_argument("--measure", nargs="+", metavar="CHECKPOINT", help="only measure these checkpoints")
    ap.add_argument("--set", action="append", default=[], help="a setting every variant shares")
    ap.add_argument("--minutes", type=float, default=7.0, help="pretraining wall time each (all run at once)")
    ap.add_argument("--calibrate-steps", type=int, default=150)
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8, help="sampling steps for the measurement")
    ap.add_argument("--guidance-scale", type=float, default=2.0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if bool(a.measure) == bool(a.variant):
        ap.error("give exactly one of --variant (pretrain, then measure) and --measure CHECKPOINT ... (measure only)")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.measure:
        return measure_only(a.measure, a)
    variants = [parse_variant(v) for v in a.variant]
    threads = max(1, (os.cpu_count() or 2) // len(variants))
    result: dict = {"variants": {n: s for n, s in variants}, "common": a.set, "minutes": a.minutes,
                    "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}

    t0 = time.time()  # calibration: every variant at once, as in the real run
    (out / "calib").mkdir(exist_ok=True)
    wait(launch(variants, a.set, out / "calib", threads, [f"pretrain.steps={a.calibrate_steps}"]))
    rates = {}
    for name, _ in variants:
        info = json.loads((out / "calib" / name / "pretrain_info.json").read_text())
        rates[name] = info["steps"] / (info["minutes"] * 60)
    steps = int(min(rates.values()) * a.minutes * 60 * 0.92)
    result.update(calibration_s=round(time.time() - t0, 1), steps_per_s=rates, steps=steps)
    print(f"calibration: {rates} -> {steps} steps each", flush=True)

    t0 = time.time()
    wait(launch(variants, a.set, out, threads, [f"pretrain.steps={steps}", f"pretrain.max_minutes={a.minutes * 1.15}"]))
    result["pretrain_s"] = round(time.time() - t0, 1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result["results"] = {}
    for name, _ in variants:
        info = json.loads((out / name / "pretrain_info.json").read_text())
        m = measure(out / name, a.seeds, a.steps, a.guidance_scale, device)
        result["results"][name] = {"pretrain": info, **m}
        print(name, {k: {x: m[k][x] for x in ("acceptance", "in_range", "histogram")} for k in ("train", "heldout")},
              flush=True)
        with tarfile.open(out / f"{name}.tar.gz", "w:gz") as tf:
            tf.add(out / name, arcname=name)
        (out / "sweep.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
