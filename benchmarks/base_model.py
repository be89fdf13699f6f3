"""Measure a world base checkpoint: acceptance (score >= 0.8), per-prompt acceptance histogram and
mean judge score on train and held-out prompts; writes a section of benchmarks/RESULTS.md.

    python benchmarks/base_model.py --base assets/world-base --seeds 16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ipo_ray.evaluate import evaluate_policy, read_prompts, set_threads  # noqa: E402
from ipo_ray.policy import T2VPolicy  # noqa: E402
from benchmarks.results import update_section  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", default="assets/world-base")
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance-scale", type=float, default=2.0)
    ap.add_argument("--out", default="/tmp/ipo-ray-base-eval")
    args = ap.parse_args(argv)
    set_threads()
    policy = T2VPolicy.from_pretrained(args.base)
    info = json.loads((Path(args.base) / "pretrain_info.json").read_text()) \
        if (Path(args.base) / "pretrain_info.json").is_file() else {}
    t0 = time.time()
    res = {}
    for split in ("train", "heldout"):
        s = evaluate_policy(policy, read_prompts(f"world:{split}"), args.seeds, Path(args.out) / split,
                            steps=args.steps, guidance_scale=args.guidance_scale, save_videos=False)
        res[split] = s[split] | {k: s[k] for k in ("temporal_flicker", "dynamic_degree", "motion_smoothness")}
    lines = [f"Command: `python benchmarks/base_model.py --base {args.base} --seeds {args.seeds} --steps {args.steps} "
             f"--guidance-scale {args.guidance_scale}` ({time.time() - t0:.0f} s on this machine).", "",
             f"Base: {policy.num_parameters():,} transformer parameters; pretraining: "
             + (", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items()) or "n/a"), "",
             "| split | videos | acceptance | mean score | prompts strictly between 10% and 90% | "
             "per-prompt acceptance histogram: 0 / (0,25) / [25,50) / [50,75) / [75,100) / 100 | "
             "temporal flicker | dynamic degree | motion smoothness |", "|---|---|---|---|---|---|---|---|---|"]
    for split, s in res.items():
        h = s["per_prompt_hist"]
        lines.append(f"| {split} | {s['n']} | {s['acceptance']:.3f} | {s['mean_score']:.3f} | "
                     f"{s['frac_prompts_strictly_between_10_90']:.2f} ({s['prompts']} prompts) | "
                     f"{' / '.join(str(h[k]) for k in ('0', '(0,25)', '[25,50)', '[50,75)', '[75,100)', '100'))} | "
                     f"{s['temporal_flicker']:.4f} | {s['dynamic_degree']:.3f} | {s['motion_smoothness']:.4f} |")
    update_section("Base model (verifiable world)", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
