"""How big a base draws each shape: lit pixels per frame of generated vs rendered clips, and the judge's verdict.

    python benchmarks/shape_size.py --base assets/world-base
    python benchmarks/shape_size.py --base .cache/world-base-s8 --guidance 2 3 4.5

Lit = the brightest channel >= 128 (the judge's CORE). A rendered square of these prompts lights ~35-40 pixels,
a circle ~29; a base that draws them much larger or smaller has learned a biased shape (RESULTS "Base model").
Shape apart from the judge's pixel-exact test: the object's pixels (its colour, lit) opened with a 2x2 square (stray
pixels and one-pixel spurs removed), then the share of its bounding box it fills and of the box's corners it lights
(rendered squares 1.0 / 1.0, circles ~0.8 / 0.0). If a prompt's two shape words give the same two numbers, the model
draws one shape for both, whatever the judge says of its edges.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402

from ipo_ray.world.grammar import parse_prompt  # noqa: E402
from ipo_ray.world.judge import _hue_masks, ACCEPT, CORE, judge_details  # noqa: E402 (numpy only)

PROMPTS = ["a red square falls down", "a blue square moves from left to right", "a green square rises up",
           "a red circle falls down"]


def lit(frames: np.ndarray) -> float:
    """Mean lit pixels (brightest channel >= the judge's CORE) per frame of uint8 clips ``[..., F, H, W, 3]``."""
    return float((np.asarray(frames).max(-1) >= CORE).sum((-2, -1)).mean())


def box_fill(video: np.ndarray, prompt: str) -> tuple[float, float]:
    """Mean (area / bounding box, share of the box's 4 corners lit) over the frames where the prompt's first
    object, opened with a 2x2 square, is whole (box at least 5 px a side, off the border); nan if none is."""
    masks, _, core = _hue_masks(np.asarray(video))
    kernel = np.ones((2, 2), np.uint8)
    fills, corners = [], []
    for m in masks[parse_prompt(prompt).objects[0][0]] & core:
        m = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_OPEN, kernel).astype(bool)
        ys, xs = np.nonzero(m)
        if ys.size == 0:
            continue
        y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
        h, w = m.shape
        if min(y1 - y0, x1 - x0) + 1 < 5 or x0 == 0 or y0 == 0 or x1 == w - 1 or y1 == h - 1:
            continue
        fills.append(m.sum() / float((y1 - y0 + 1) * (x1 - x0 + 1)))
        corners.append(m[[y0, y0, y1, y1], [x0, x1, x0, x1]].mean())
    return (float(np.mean(fills)), float(np.mean(corners))) if fills else (float("nan"), float("nan"))


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
    print("| prompt | guidance | lit px generated | lit px rendered | acceptance | shape term | opened: box fill / "
          "corners lit | rendered: box fill / corners lit |")
    print("|---|---|---|---|---|---|---|---|")
    for p in args.prompts:
        clips = np.stack([render(p, s) for s in seeds])
        rendered = lit(clips)
        r_box = np.nanmean([box_fill(c, p) for c in clips], axis=0)
        for g in args.guidance:
            frames, _ = policy.sample([p] * len(seeds), seeds, args.steps, g)
            d = [judge_details(f, p) for f in frames]
            box = np.nanmean([box_fill(f, p) for f in frames], axis=0)
            print(f"| {p} | {g:g} | {lit(frames):.1f} | {rendered:.1f} | "
                  f"{np.mean([x['score'] >= ACCEPT for x in d]):.3f} | {np.mean([x['shape'] for x in d]):.2f} | "
                  f"{box[0]:.2f} / {box[1]:.2f} | {r_box[0]:.2f} / {r_box[1]:.2f} |")


if __name__ == "__main__":
    main()
