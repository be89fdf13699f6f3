"""Where a world base fails: per-category acceptance and judge components, and whether the same seed
draws different trajectories for opposite directions (a base that ignores the motion words does not),
per-shape acceptance, and whether the prompt's shape word changes the denoiser's clean-clip estimate
(the same noisy square clip denoised under "square" and under "circle": corner fill, 1.0 for a square,
0.4 for a circle).

    python benchmarks/base_probe.py --base assets/world-base --seeds 4
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ipo_ray.evaluate import set_threads  # noqa: E402
from ipo_ray.policy import T2VPolicy  # noqa: E402
from ipo_ray.world import render, splits  # noqa: E402
from ipo_ray.world.judge import _hue_masks, _track, judge_details  # noqa: E402

KEYS = ("score", "presence", "clean", "shape", "motion")
OPPOSITES = [("a red square moves from left to right", "a red square moves from right to left", 0),
             ("a red square falls down", "a red square rises up", 1)]


def centroid_travel(video: np.ndarray, color: str, axis: int) -> float:
    masks, _, core = _hue_masks(video)
    track = _track(masks[color], core, 3.0)
    c = (track.cx, track.cy)[axis]
    c = c[~np.isnan(c)]
    return float(c[-1] - c[0]) if c.size >= 2 else 0.0


def fill(video: np.ndarray, color: str) -> float:
    masks, _, core = _hue_masks(video)
    return float(np.nanmean(_track(masks[color], core, 3.0).fill))


def shape_sensitivity(policy: T2VPolicy, t: int, n: int = 16) -> tuple[float, float]:
    """Mean corner fill of the denoiser's x0 estimate from the same noisy square clips at timestep ``t``
    under the square prompt and under the circle prompt. Equal values: the shape word is ignored."""
    import torch

    src = "a red square falls down"
    x0 = policy.codec.encode(torch.from_numpy(np.stack([render(src, s) for s in range(n)])))
    tt = torch.full((n,), t)
    xt = policy.scheduler.add_noise(x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(t)), tt)
    a = policy.scheduler.alphas_cumprod[t]
    out = []
    for prompt in (src, "a red circle falls down"):
        with torch.no_grad():
            v = policy.transformer(hidden_states=xt, encoder_hidden_states=policy.encode_prompts([prompt] * n),
                                   timestep=tt, return_dict=False)[0]
        est = policy.codec.decode(a.sqrt() * xt - (1 - a).sqrt() * v)
        out.append(float(np.nanmean([fill(f, "red") for f in est])))
    return out[0], out[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", default="assets/world-base")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--guidance-scale", type=float, default=2.0)
    args = ap.parse_args(argv)
    set_threads()
    policy = T2VPolicy.from_pretrained(args.base)
    prompts = [p for p in splits()["train"] for _ in range(args.seeds)]
    seeds = [1000 + i % args.seeds for i in range(len(prompts))]
    frames = np.concatenate([policy.sample(prompts[i:i + 50], seeds[i:i + 50], args.steps, args.guidance_scale)[0]
                             for i in range(0, len(prompts), 50)])
    per, by_shape = defaultdict(list), defaultdict(list)
    for v, p in zip(frames, prompts):
        d = judge_details(v, p)
        per[d["category"]].append([d[k] for k in KEYS])
        if " and " not in p:
            by_shape[p.split()[2]].append([d["score"] >= 0.8, d["shape"]])
    print(f"{args.base}: {len(prompts)} train videos, {args.steps} steps, guidance {args.guidance_scale}")
    print("| category | videos | acceptance | " + " | ".join(KEYS) + " |")
    for cat, rows in per.items():
        a = np.array(rows)
        print(f"| {cat} | {len(a)} | {(a[:, 0] >= 0.8).mean():.2f} | " + " | ".join(f"{m:.2f}" for m in a.mean(0)) + " |")
    for shape, rows in sorted(by_shape.items()):
        a = np.array(rows, float)
        print(f"single-object {shape} prompts: acceptance {a[:, 0].mean():.2f}, shape term {a[:, 1].mean():.2f}")
    for t in (300, 500, 700):
        sq, ci = shape_sensitivity(policy, t)
        print(f"x0 estimate of noisy square clips at t={t}: corner fill {sq:.2f} under 'square', {ci:.2f} under 'circle'")
    for pa, pb, axis in OPPOSITES:
        s = list(range(1, 9))
        fa = policy.sample([pa] * 8, s, args.steps, args.guidance_scale)[0]
        fb = policy.sample([pb] * 8, s, args.steps, args.guidance_scale)[0]
        ta = [centroid_travel(v, "red", axis) for v in fa]
        tb = [centroid_travel(v, "red", axis) for v in fb]
        print(f"same seeds, {pa!r} vs {pb!r}: mean centroid travel {np.mean(ta):+.1f} vs {np.mean(tb):+.1f} px, "
              f"mean |pixel difference| {np.abs(fa.astype(int) - fb.astype(int)).mean():.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
