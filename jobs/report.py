"""After a run: evaluate the base and the published checkpoints on fixed prompts and seeds, then write
the HTML report. ``python jobs/report.py --run-dir DIR`` (or ``ipo-ray report``) redoes it."""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ipo_ray.config import Config  # noqa: E402
from ipo_ray.evaluate import evaluate_policy, read_prompts, set_threads  # noqa: E402
from ipo_ray.report import write_report  # noqa: E402
from ipo_ray.run_dir import RunDir  # noqa: E402


def versions_to_eval(run: RunDir, cfg: Config) -> list[int]:
    """Base, and one checkpoint per round (rounds) or a few evenly spaced ones (semi-online)."""
    vs = run.versions()
    if not vs:
        return [0]
    if cfg.loop.mode == "rounds" or len(vs) <= 3:
        return [0, *vs]
    picks = sorted({vs[len(vs) // 3 - 1], vs[2 * len(vs) // 3 - 1], vs[-1]})
    return [0, *picks]


def finish_run(cfg: Config, run_dir: str, log=print) -> dict:
    set_threads()
    run = RunDir(run_dir)
    prompts = []
    for split in cfg.eval.splits:
        prompts += read_prompts(f"world:{split}") if cfg.model.source == "world_base" else []
    if not prompts:
        prompts = read_prompts(cfg.prompts)[:16]
    results = {}
    for v in versions_to_eval(run, cfg):
        out = run.path / "eval" / f"v{v:06d}"
        if (out / "summary.json").is_file():
            continue
        policy, _ = run.load_policy(v)
        s = evaluate_policy(policy, prompts, cfg.eval.seeds, out, version=v, steps=cfg.sampling.steps,
                            guidance_scale=cfg.sampling.guidance_scale, seed_offset=cfg.eval.seed_offset)
        results[v] = {k: s[k]["acceptance"] for k in ("train", "heldout") if k in s}
        log(f"eval v{v}: " + ", ".join(f"{k} acceptance {a:.3f}" for k, a in results[v].items()))
    report = write_report(run.path)
    return {"eval": results, "report": str(report)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--no-eval", action="store_true", help="only rebuild the HTML from what is there")
    args = ap.parse_args(argv)
    run = RunDir(args.run_dir)
    if args.no_eval:
        print(write_report(run.path))
    else:
        print(finish_run(run.config(), args.run_dir)["report"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
