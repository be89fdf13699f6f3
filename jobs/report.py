"""After a run: evaluate the base and the published checkpoints on fixed prompts and seeds, then write
the HTML report. ``python jobs/report.py --run-dir DIR`` (or ``ipo-ray report``) redoes it."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

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


def eval_plan(cfg: Config) -> tuple[list[str], list[int]]:
    """The fixed evaluation prompts and seeds per prompt: every split gets at least ``eval.seeds``
    seeds per prompt and at least ``eval.min_samples_per_split`` samples (256 by default, the
    learning targets' sample size), so a 10-prompt held-out split gets 26 seeds per prompt."""
    prompts: list[str] = []
    seeds: list[int] = []
    splits = [read_prompts(f"world:{s}") for s in cfg.eval.splits] if cfg.model.source == "world_base" else []
    if not splits:
        splits = [read_prompts(cfg.prompts)[:16]]
    for ps in splits:
        n = max(cfg.eval.seeds, math.ceil(cfg.eval.min_samples_per_split / max(1, len(ps))))
        prompts += ps
        seeds += [n] * len(ps)
    return prompts, seeds


def _base_eval_cache(cfg: Config, prompts: list[str], seeds: list[int]) -> Path | None:
    """Where the base's evaluation is cached: it depends only on the base weights and the plan."""
    from ipo_ray.policy import POLICY_FILE

    base = Path(cfg.model.path or cfg.pretrain.out)
    weights = base / POLICY_FILE
    if cfg.model.source != "world_base" or not weights.is_file():
        return None
    key = hashlib.sha256(json.dumps([str(base.resolve()), weights.stat().st_mtime_ns, weights.stat().st_size, prompts,
                                     seeds, cfg.eval.seed_offset, cfg.sampling.steps,
                                     cfg.sampling.guidance_scale]).encode()).hexdigest()[:16]
    return Path(os.environ.get("IPO_RAY_CACHE", ".cache")).resolve() / "base-eval" / key


def _copy_eval(src: Path, dst: Path) -> None:
    """Copy an evaluation directory, rewriting the Parquet's video paths to the copy's own files;
    the copy appears whole or not at all (written beside ``dst``, then renamed)."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    table = pq.read_table(tmp / "samples.parquet")
    for c in ("frames_path", "video_path"):
        paths = [str(p).replace(str(src), str(dst)) for p in table.column(c).to_pylist()]
        table = table.set_column(table.schema.get_field_index(c), c, pa.array(paths, pa.string()))
    pq.write_table(table, tmp / "samples.parquet")
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


def _reuse_base_eval(cfg: Config, prompts, seeds, out: Path) -> bool:
    cache = _base_eval_cache(cfg, prompts, seeds)
    if cache is None or not (cache / "summary.json").is_file():
        return False
    _copy_eval(cache, out)
    return True


def _store_base_eval(cfg: Config, prompts, seeds, out: Path) -> None:
    cache = _base_eval_cache(cfg, prompts, seeds)
    if cache is not None:
        _copy_eval(out, cache)


def finish_run(cfg: Config, run_dir: str, log=print) -> dict:
    set_threads()
    run = RunDir(run_dir)
    prompts, seeds = eval_plan(cfg)
    results = {}
    for v in versions_to_eval(run, cfg):
        out = run.path / "eval" / f"v{v:06d}"
        if (out / "summary.json").is_file():
            continue
        if v == 0 and _reuse_base_eval(cfg, prompts, seeds, out):
            s = json.loads((out / "summary.json").read_text())
            results[v] = {k: s[k]["acceptance"] for k in ("train", "heldout") if k in s}
            log("eval v0 (cached base evaluation): " + ", ".join(f"{k} acceptance {a:.3f}" for k, a in results[v].items()))
            continue
        policy, _ = run.load_policy(v)
        s = evaluate_policy(policy, prompts, seeds, out, version=v, steps=cfg.sampling.steps,
                            guidance_scale=cfg.sampling.guidance_scale, seed_offset=cfg.eval.seed_offset)
        if v == 0:
            _store_base_eval(cfg, prompts, seeds, out)
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
