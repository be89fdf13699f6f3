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
from ipo_ray.report import best_by_eval, eval_summaries, write_report  # noqa: E402
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


def base_eval_key(cfg: Config, prompts: list[str], seeds: list[int]) -> str | None:
    """The key of the base's evaluation: it depends only on the base weights (by content), the plan and the
    arithmetic that samples it (torch version, CPU); None when the base is not a local world checkpoint."""
    import torch

    from ipo_ray.policy import POLICY_FILE

    base = Path(cfg.model.path or cfg.pretrain.out)
    if cfg.model.source != "world_base" or not (base / POLICY_FILE).is_file():
        return None
    h = hashlib.sha256()
    for f in sorted(p for p in base.rglob("*") if p.is_file() and p.suffix != ".md" and "eval" not in p.relative_to(base).parts):
        h.update(str(f.relative_to(base)).encode() + b"\0" + f.read_bytes())
    plan = [prompts, seeds, cfg.eval.seed_offset, cfg.sampling.steps, cfg.sampling.guidance_scale, torch.__version__, "cpu"]
    if cfg.sampling_dtype != "float32":  # appended only when not float32: float32 plans keep the keys they had
        plan.append(cfg.sampling_dtype)
    h.update(json.dumps(plan).encode())
    return h.hexdigest()[:16]


def _base_eval_dirs(cfg: Config, key: str) -> tuple[Path, Path]:
    """Where a base evaluation may be found: shipped beside the base (``--ship-base-eval``, committed with
    ``assets/world-base``), then the local cache, where every run stores the one it computed."""
    shipped = Path(cfg.model.path or cfg.pretrain.out).resolve() / "eval" / key
    return shipped, Path(os.environ.get("IPO_RAY_CACHE", ".cache")).resolve() / "base-eval" / key


def _copy_eval(src: Path, dst: Path, gifs: bool = True) -> None:
    """Copy an evaluation directory, pointing the Parquet's video paths at the copy's own files (a shipped
    evaluation stores bare names) and writing any GIF the source left out (from its lossless ``.npy``);
    ``gifs=False`` copies without GIFs and with bare names (what ships with a base). The copy appears whole
    or not at all (written beside ``dst``, then renamed)."""
    import numpy as np

    from ipo_ray.video import gif_bytes

    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=None if gifs else shutil.ignore_patterns("*.gif"))
    table = pq.read_table(tmp / "samples.parquet")
    for c in ("frames_path", "video_path"):
        names = [Path(p).name if p else "" for p in table.column(c).to_pylist()]
        paths = [n if not gifs or not n else str(dst / "videos" / n) for n in names]
        table = table.set_column(table.schema.get_field_index(c), c, pa.array(paths, pa.string()))
    if gifs:
        for npy, gif in zip(table.column("frames_path").to_pylist(), table.column("video_path").to_pylist()):
            local = tmp / "videos" / Path(gif).name
            if gif.endswith(".gif") and not local.exists():
                local.write_bytes(gif_bytes(np.load(tmp / "videos" / Path(npy).name)))
    pq.write_table(table, tmp / "samples.parquet")
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


def _reuse_base_eval(cfg: Config, key: str | None, out: Path) -> bool:
    for d in _base_eval_dirs(cfg, key) if key else ():
        if (d / "summary.json").is_file():
            _copy_eval(d, out)
            return True
    return False


def _store_base_eval(cfg: Config, key: str | None, out: Path) -> None:
    if key is not None:
        _copy_eval(out, _base_eval_dirs(cfg, key)[1])


def ship_base_eval(cfg: Config, run_dir: str) -> Path:
    """Copy a finished run's base evaluation beside the base (no GIFs: the copy into a run rewrites them),
    so a fresh clone's first run skips it: ``python jobs/report.py --run-dir DIR --ship-base-eval``."""
    prompts, seeds = eval_plan(cfg)
    key = base_eval_key(cfg, prompts, seeds)
    src = RunDir(run_dir).path / "eval" / "v000000"
    if key is None or not (src / "summary.json").is_file():
        raise FileNotFoundError(f"{src}: no base evaluation of a local world base to ship (run the job with eval first)")
    dst = _base_eval_dirs(cfg, key)[0]
    dst.parent.mkdir(parents=True, exist_ok=True)
    _copy_eval(src, dst, gifs=False)
    return dst


def finish_run(cfg: Config, run_dir: str, log=print) -> dict:
    set_threads()
    run = RunDir(run_dir)
    prompts, seeds = eval_plan(cfg)
    base_key = base_eval_key(cfg, prompts, seeds)  # hashes the base's files: once per run
    results = {}
    for v in versions_to_eval(run, cfg):
        out = run.path / "eval" / f"v{v:06d}"
        if (out / "summary.json").is_file():
            continue
        if v == 0 and _reuse_base_eval(cfg, base_key, out):
            s = json.loads((out / "summary.json").read_text())
            results[v] = {k: s[k]["acceptance"] for k in ("train", "heldout") if k in s}
            log("eval v0 (cached base evaluation): " + ", ".join(f"{k} acceptance {a:.3f}" for k, a in results[v].items()))
            continue
        policy, _ = run.load_policy(v)
        s = evaluate_policy(policy, prompts, seeds, out, version=v, steps=cfg.sampling.steps,
                            guidance_scale=cfg.sampling.guidance_scale, seed_offset=cfg.eval.seed_offset)
        if v == 0:
            _store_base_eval(cfg, base_key, out)
        results[v] = {k: s[k]["acceptance"] for k in ("train", "heldout") if k in s}
        log(f"eval v{v}: " + ", ".join(f"{k} acceptance {a:.3f}" for k, a in results[v].items()))
    best = name_best_by_eval(run)
    report = write_report(run.path)
    return {"eval": results, **best, "report": str(report)}


def name_best_by_eval(run: RunDir) -> dict:
    """When the rollouts named no best version for want of the final version's rollouts (``loop.score_final``
    off, semi-online), or because the critic is pairwise, the evaluation's train split names it: written into
    summary.json (whole, beside and renamed) and returned; otherwise nothing changes."""
    f = run.path / "summary.json"
    summary = json.loads(f.read_text()) if f.is_file() else None
    if not summary or summary.get("best_version") is not None or "final_version" not in summary:
        return {}
    best = best_by_eval(eval_summaries(run.path), int(summary["final_version"]))
    if best is None:
        return {}
    why = summary.pop("best_version_note", None)  # kept as why the rollouts named none (report.html shows it)
    summary = summary | best | ({"rollouts_no_best": why} if why else {})
    tmp = f.with_name(f.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, f)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--no-eval", action="store_true", help="only rebuild the HTML from what is there")
    ap.add_argument("--ship-base-eval", action="store_true",
                    help="copy the run's base evaluation beside its base checkpoint (model.path), where later runs find it")
    args = ap.parse_args(argv)
    run = RunDir(args.run_dir)
    if args.ship_base_eval:
        print(ship_base_eval(run.config(), args.run_dir))
    elif args.no_eval:
        print(write_report(run.path))
    else:
        print(finish_run(run.config(), args.run_dir)["report"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
