"""How big a base draws each shape: lit pixels per frame of generated vs rendered clips, and the judge's verdict.

    python benchmarks/shape_size.py --base assets/world-base
    python benchmarks/shape_size.py --base .cache/world-base-s8 --guidance 2 3 4.5

Lit = the brightest channel >= 128 (the judge's CORE). A rendered square of these prompts lights ~35-40 pixels,
a circle ~29; a base that draws them much larger or smaller has learned a biased shape (RESULTS "Base model").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipo_ray.world.judge import ACCEPT, CORE, judge_details  # noqa: E402 (numpy only)

PROMPTS = ["a red square falls down", "a blue square moves from left to right", "a green square rises up",
           "a red circle falls down"]


def lit(frames: np.ndarray) -> float:
    """Mean lit pixels (brightest channel >= the judge's CORE) per frame of uint8 clips ``[..., F, H, W, 3]``."""
    return float((np.asarray(frames).max(-1) >= CORE).sum((-2, -1)).mean())


def main() -> None:
    from ipo_ray.config import load_config
    from ipo_ray.run_dir import load_base_policy
    from ipo_ray.world.render import render

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="assets/world-base")
    ap.add_argument("--prompts", nargs="+", default=PROMPTS)
    ap.add_argument("--seeds", type=int, default=16, help="seeds 100, 101, ... per prompt")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--guidance", type=float, nargs="+", default=[2.0])
    args = ap.parse_args()
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "world-tiny.yaml",
                      [f"model.path={args.base}"])
    policy = load_base_policy(cfg)
    seeds = list(range(100, 100 + args.seeds))
    print("| prompt | guidance | lit px generated | lit px rendered | acceptance | shape term |")
    print("|---|---|---|---|---|---|")
    for p in args.prompts:
        rendered = lit(np.stack([render(p, s) for s in seeds]))
        for g in args.guidance:
            frames, _ = policy.sample([p] * len(seeds), seeds, args.steps, g)
            d = [judge_details(f, p) for f in frames]
            print(f"| {p} | {g:g} | {lit(frames):.1f} | {rendered:.1f} | "
                  f"{np.mean([x['score'] >= ACCEPT for x in d]):.3f} | {np.mean([x['shape'] for x in d]):.2f} |")


if __name__ == "__main__":
    main()
