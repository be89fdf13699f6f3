"""Learning on the verifiable world: run the loop with a named setting, evaluate the base and every
round on the same prompts and seeds (>= 256 samples per split), and keep one row per setting in the
"Learning" section of benchmarks/RESULTS.md.

    python benchmarks/learning.py --name dpo                      # the embedded default as is
    python benchmarks/learning.py --name kto --set algo.name=kto
    python benchmarks/learning.py --name sft --set algo.name=sft  # best-of-N SFT baseline

Each run's numbers are kept in benchmarks/learning/<name>.json so the table can be rebuilt from all
of them; the run directory is kept under runs/bench-<name> (videos, report.html).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import update_section  # noqa: E402

STORE = ROOT / "benchmarks" / "learning"


def landed(path: Path) -> str:
    """The commit that added a stored row: its command reproduces it with that commit's default and base."""
    out = subprocess.run(["git", "log", "--diff-filter=A", "--format=%h", "--", str(path)], cwd=ROOT,
                         capture_output=True, text=True)
    return (out.stdout.split() or ["(this tree)"])[-1]


def shape_group(prompt: str) -> str:
    """'circle', 'square' or 'two-object': what a world prompt asks to draw (the square's corners are what the
    base misses; RESULTS "Base model")."""
    from ipo_ray.world.grammar import parse_prompt

    objects = parse_prompt(prompt).objects
    return "two-object" if len(objects) > 1 else objects[0][1]


def by_shape(samples: Path) -> dict[str, float]:
    """Train-split acceptance per shape group of one evaluation's ``samples.parquet``."""
    import pyarrow.parquet as pq

    t = pq.read_table(samples, columns=["prompt", "split", "accepted"]).to_pandas()
    t = t[t["split"] == "train"]
    return {k: float(v) for k, v in t.groupby(t["prompt"].map(shape_group))["accepted"].mean().items()}


def backfill(path: Path) -> bool:
    """Add ``train_by_shape`` to a stored row's evaluations from its run directory, where that is still on disk."""
    r = json.loads(path.read_text())
    run_dir = ROOT / "runs" / f"bench-{r['name']}"
    if all("train_by_shape" in e for e in r["evals"]):
        return False
    files = [run_dir / "eval" / f"v{e['version']:06d}" / "samples.parquet" for e in r["evals"]]
    if not all(f.exists() for f in files):
        return False
    for e, f in zip(r["evals"], files):
        e["train_by_shape"] = by_shape(f)
    path.write_text(json.dumps(r, indent=2))
    return True


def shape_table(rows: list[dict]) -> str:
    """Train acceptance by shape group, base -> last round, for the rows that stored it."""
    groups = ("circle", "square", "two-object")
    lines = ["Train acceptance by what the prompt asks to draw (21 circle, 21 square and 8 two-object prompts, every "
             "two-object one with a square; the same videos as the table above), base -> last round, for the rows "
             "whose evaluation samples were kept:", "",
             "| setting | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
    for r in rows:
        ev = r["evals"]
        if not all("train_by_shape" in e for e in (ev[0], ev[-1])):
            continue
        cells = [f"{ev[0]['train_by_shape'].get(g, float('nan')):.3f} -> {ev[-1]['train_by_shape'].get(g, float('nan')):.3f}"
                 for g in groups]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table() -> str:
    paths = sorted(STORE.glob("*.json"))
    rows = [json.loads(p.read_text()) for p in paths]
    lines = ["Acceptance = world-judge score >= 0.8 on fixed prompts and seeds, the same for every checkpoint of a "
             "row (videos per split in the last column: 256 per split for the settings, fewer for the quick "
             "probes). Mean score is the judge's mean, a less noisy signal than acceptance. Round times are wall "
             "seconds on this 2-core machine (generation + judging + training). The committed base and the default "
             "config change over time: a row's command reproduces it at the commit in its last column.", "",
             "| setting | command | train acceptance: base -> round 1 -> 2 -> 3 | held-out acceptance | "
             "train mean score | dyn. (both splits) | train gain | held-out gain | s per round | videos (train / held-out) | "
             "commit |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for path, r in zip(paths, rows):
        ev = r["evals"]
        tr, he, tm = [e["train"] for e in ev], [e["heldout"] for e in ev], [e["train_mean"] for e in ev]
        dyn = [e.get("dynamic_degree") for e in ev]
        dyn_s = " -> ".join(f"{x:.2f}" for x in dyn) if all(x is not None for x in dyn) else "-"
        lines.append(f"| {r['name']} | `{r['command']}` | {' -> '.join(f'{x:.3f}' for x in tr)} | "
                     f"{' -> '.join(f'{x:.3f}' for x in he)} | {' -> '.join(f'{x:.3f}' for x in tm)} | {dyn_s} | "
                     f"{100 * (tr[-1] - tr[0]):+.1f} pts | {100 * (he[-1] - he[0]):+.1f} pts | "
                     f"{' / '.join(f'{s:.0f}' for s in r['round_seconds']) or 'one stream: %.0f' % r['loop_seconds']} | {ev[0]['n_train']} / {ev[0]['n_heldout']} | "
                     f"{landed(path)} |")
    return "\n".join(lines) + "\n\n" + shape_table(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--name", required=True)
    ap.add_argument("--config", default="configs/world-tiny.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--backfill", action="store_true",
                    help="add per-shape acceptance to stored rows whose run directory is still under runs/")
    args = ap.parse_args(argv)
    if not args.table_only:
        from ipo_ray.config import load_config
        from jobs.loop import Loop
        from jobs.report import finish_run

        run_dir = ROOT / "runs" / f"bench-{args.name}"
        cfg = load_config(ROOT / args.config, ["eval.min_samples_per_split=256", *args.overrides, f"run_dir={run_dir}"])
        t0 = time.time()
        summary = Loop(cfg, str(run_dir), log=print).run_all()
        loop_s = time.time() - t0
        res = finish_run(cfg, str(run_dir))
        evals = []
        for v in sorted(res["eval"]):
            s = json.loads((run_dir / "eval" / f"v{v:06d}" / "summary.json").read_text())
            evals.append({"version": v, "train": s["train"]["acceptance"], "heldout": s["heldout"]["acceptance"],
                          "train_mean": s["train"]["mean_score"], "heldout_mean": s["heldout"]["mean_score"],
                          "n_train": s["train"]["n"], "n_heldout": s["heldout"]["n"],
                          "dynamic_degree": s.get("dynamic_degree"), "temporal_flicker": s.get("temporal_flicker"),
                          "train_by_shape": by_shape(run_dir / "eval" / f"v{v:06d}" / "samples.parquet")})
        recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        rounds = [r for r in recs if r.get("event") == "round"]
        STORE.mkdir(parents=True, exist_ok=True)
        cmd = f"python benchmarks/learning.py --name {args.name}" + "".join(f" --set {o}" for o in args.overrides)
        (STORE / f"{args.name}.json").write_text(json.dumps({
            "name": args.name, "command": cmd, "evals": evals, "loop_seconds": loop_s,
            "round_seconds": [r.get("seconds", float("nan")) for r in rounds], "summary": summary}, indent=2))
    if args.backfill:
        for path in sorted(STORE.glob("*.json")):
            if backfill(path):
                print(f"backfilled {path.name}")
    update_section("Learning (verifiable world)", table())
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
