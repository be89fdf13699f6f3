"""The papers' ablations on the prompts the world base can draw: its circles.

The committed base never draws a square (benchmarks/RESULTS.md, "Base model"), so on the full world
split every method that learns from its own samples has nothing to prefer on 29 of 50 train prompts
and the comparisons drown in noise. Here every row trains on the 21 single-object circle train prompts
(base acceptance about 0.6, with within-prompt diversity) through the real Ray loop (generator and
critic actor pools, Ray Data, Ray Train with 2 DDP workers, weight sync), with one shared recipe and the
same samples budget (3 rounds x 7 prompts x 8 videos = 168 videos; the offline row: 1 round x 21 x 8),
then judges checkpoints on fixed seeds: 21 train circles x 13 seeds (273 videos) and the 3 held-out
circles x 86 seeds (258).

    python benchmarks/ablations.py --rows sft,dpo,kto,rwr      # run rows (skips those already measured)
    python benchmarks/ablations.py --table-only                # rebuild the RESULTS section

Each row's numbers are kept in benchmarks/ablations/<name>.json; run directories under runs/abl-<name>.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results import update_section  # noqa: E402

STORE = ROOT / "benchmarks" / "ablations"
TITLE = "Ablations on the circle prompts (verifiable world)"
# One recipe for every row (the CI learning guard's, scaled to 7 prompts a round).
COMMON = ["loop.rounds=3", "loop.prompts_per_round=7", "sampling.num_per_prompt=8", "train.lr=2e-4",
          "train.warmup_steps=10", "train.batch_size=4", "loop.epochs_per_round=16"]
# name -> (what it ablates, overrides, evaluate every round)
ROWS: dict[str, tuple[str, list[str], bool]] = {
    "sft": ("baseline: best-of-N SFT", ["algo.name=sft"], True),
    "dpo": ("1: DPO (+0.2 NLL chosen, +0.1 NLL real)", ["algo.name=dpo"], False),
    "dpo-ep2": ("1: DPO, 2 epochs a round instead of 16", ["algo.name=dpo", "loop.epochs_per_round=2"], False),
    "kto": ("1: KTO (+0.1 NLL real)", ["algo.name=kto"], False),
    "rwr": ("1: RWR (exp weights)", ["algo.name=rwr"], False),
    "dpo-offline": ("2: DPO, one round, same 168 videos", ["algo.name=dpo", "loop.rounds=1",
                                                          "loop.prompts_per_round=21"], False),
    "dpo-no-real": ("3: DPO without the real-video NLL", ["algo.name=dpo", "algo.lambda_real=0"], False),
    "dpo-noise84": ("4: DPO, critic at 84% label accuracy (pointwise noise: "
                    "the label is replaced 16% of the time)", ["algo.name=dpo", "critic.noise_accuracy=0.84"], False),
    "rwr-flow": ("5: RWR on the optical-flow metric reward", ["algo.name=rwr", "critic.backend=flow"], False),
    "dpo-semi": ("6: DPO semi-online (sync every 4 steps)", ["algo.name=dpo", "loop.mode=semi_online",
                                                            "loop.sync_every=4"], False),
    # Session 8: the DPO temperature. z = -beta * (...) on per-sample mean errors; Diffusion-DPO uses
    # 2500-5000 with a factor 1/2 (= 1250-2500 here); a larger beta saturates the loss after a smaller
    # displacement of the errors, which is what over-fitting the pairs does (notes below the table).
    "dpo-b5000-ep2": ("1: DPO, beta 5000 (default 500), 2 epochs a round", ["algo.name=dpo", "algo.beta=5000",
                                                                          "loop.epochs_per_round=2"], False),
    "dpo-b5000": ("1: DPO, beta 5000 (default 500)", ["algo.name=dpo", "algo.beta=5000"], True),
    # Every circle prompt every round (3 x 21 x 8 = 504 videos: three times the shared budget).
    "sft-all": ("baseline, 3x the videos: SFT on all 21 prompts a round, 8 epochs",
                ["algo.name=sft", "loop.prompts_per_round=21", "loop.epochs_per_round=8"], True),
    "dpo-all-b5000": ("1, 3x the videos: DPO beta 5000, all 21 prompts a round, 2 epochs",
                      ["algo.name=dpo", "algo.beta=5000", "loop.prompts_per_round=21", "loop.epochs_per_round=2"], True),
    # Strict best-of-N: at most 2 accepted samples per group, so the prompts the policy always gets right
    # (8 rows each under sft-all) do not outweigh the ones it rarely gets right (notes below the table).
    "sft-cap2": ("baseline, 3x the videos: SFT on the 2 best accepted samples of each group, all 21 prompts a round",
                 ["algo.name=sft", "algo.sft_per_group=2", "loop.prompts_per_round=21"], True),
    "sft-cap2-lr1e-4": ("as sft-cap2, lr 1e-4 instead of 2e-4",
                        ["algo.name=sft", "algo.sft_per_group=2", "loop.prompts_per_round=21", "train.lr=1e-4"], True),
    "kto-b5000": ("1: KTO, beta 5000 (default 500)", ["algo.name=kto", "algo.beta=5000"], False),
    "sft-cap1": ("baseline, 3x the videos: strict best-of-8 SFT (the best accepted sample of each group)",
                 ["algo.name=sft", "algo.sft_per_group=1", "loop.prompts_per_round=21"], True),
    # Session 9: the same runs with the final version scored too, and the version the loop itself keeps
    # (best_version: its own rollouts' critic acceptance) evaluated like the rest ("kept" column).
    "sft-cap2-keep": ("sft-cap2, keeping the version whose own rollouts scored best (loop.score_final)",
                      ["algo.name=sft", "algo.sft_per_group=2", "loop.prompts_per_round=21", "loop.score_final=true"],
                      True),
    "dpo-all-b5000-keep": ("dpo-all-b5000, keeping the version whose own rollouts scored best (loop.score_final)",
                           ["algo.name=dpo", "algo.beta=5000", "loop.prompts_per_round=21", "loop.epochs_per_round=2",
                            "loop.score_final=true"], True),
}
TRAIN_SEEDS, HELDOUT_SEEDS, SEED_OFFSET = 13, 86, 20_000


def circle_prompts() -> tuple[list[str], list[str]]:
    from ipo_ray.world import splits

    sp = splits()
    pick = [p for p in sp["train"] if "circle" in p and "square" not in p]
    held = [p for p in sp["heldout"] if "circle" in p and "square" not in p]
    return pick, held


def evaluate(policy, cfg, out: Path, version: int) -> dict:
    from ipo_ray.evaluate import evaluate_policy

    train, held = circle_prompts()
    s = evaluate_policy(policy, train + held, [TRAIN_SEEDS] * len(train) + [HELDOUT_SEEDS] * len(held), out,
                        version=version, steps=cfg.sampling.steps, guidance_scale=cfg.sampling.guidance_scale,
                        seed_offset=SEED_OFFSET, save_videos=False)
    import pyarrow.parquet as pq

    t = pq.read_table(out / "samples.parquet").to_pandas()
    res = {"version": version}
    for split in ("train", "heldout"):
        d = t[t["split"] == split]
        res[split] = {"n": int(len(d)), "acceptance": float(d["accepted"].mean()), "mean_score": float(d["score"].mean()),
                      "dynamic_degree": float(d["dynamic_degree"].mean())}
    assert res["train"]["n"] == s["train"]["n"]
    return res


def base_eval(cfg) -> dict:
    """The base's evaluation, shared by every row (same weights, prompts, seeds)."""
    from ipo_ray.run_dir import load_base_policy

    path = STORE / "base.json"
    if path.is_file():
        return json.loads(path.read_text())
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        res = evaluate(load_base_policy(cfg), cfg, Path(d), 0)
    STORE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2))
    return res


def run_row(name: str) -> None:
    from ipo_ray.config import load_config
    from ipo_ray.run_dir import RunDir
    from jobs.loop import Loop

    what, sets, every_round = ROWS[name]
    STORE.mkdir(parents=True, exist_ok=True)
    prompts = STORE / "circles-train.txt"
    prompts.write_text("\n".join(circle_prompts()[0]) + "\n")
    run_dir = ROOT / "runs" / f"abl-{name}"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    overrides = [*COMMON, *sets]
    cfg = load_config(ROOT / "configs" / "world-tiny.yaml",
                      [f"prompts={prompts}", *overrides, f"run_dir={run_dir}"])
    base = base_eval(cfg)
    t0 = time.time()
    summary = Loop(cfg, str(run_dir), log=print).run_all()
    loop_s = time.time() - t0
    run = RunDir(run_dir)
    versions = run.versions()
    if not (every_round and cfg.loop.mode == "rounds"):  # semi-online publishes many versions: judge the last
        versions = versions[-1:]
    evals = [base]
    for v in versions:
        policy, _ = run.load_policy(v)
        evals.append(evaluate(policy, cfg, run_dir / "eval" / f"v{v:06d}", v))
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rounds = [r for r in recs if r.get("event") == "round"]
    cmd = f"python benchmarks/ablations.py --rows {name}"
    (STORE / f"{name}.json").write_text(json.dumps({
        "name": name, "ablation": what, "command": cmd, "overrides": overrides, "evals": evals,
        "loop_seconds": loop_s, "round_seconds": [r.get("seconds") for r in rounds],
        "rows_trained": summary["rows_trained"], "optimizer_steps": summary["optimizer_steps"],
        "best_version": summary.get("best_version"), "rollouts": summary.get("rollouts")}, indent=2))


def kept(rec: dict) -> str:
    """The gain of the version the loop keeps (``best_version``), when the row recorded it and evaluated it."""
    best = rec.get("best_version")
    ev = {e["version"]: e for e in rec["evals"]}
    if best is None or best not in ev:
        return "-"
    b, e = ev[0], ev[best]
    return (f"v{best}, {100 * (e['train']['acceptance'] - b['train']['acceptance']):+.1f} / "
            f"{100 * (e['heldout']['acceptance'] - b['heldout']['acceptance']):+.1f} pts")


def table() -> str:
    order = list(ROWS)
    recs = sorted((json.loads(p.read_text()) for p in STORE.glob("*.json") if p.stem in ROWS),
                  key=lambda r: order.index(r["name"]))
    lines = [f"Command: `python benchmarks/ablations.py --rows {','.join(ROWS)}` (one row per run; each row's command "
             "below). Shared recipe: `" + " ".join(f"--set {s}" for s in COMMON) + "` on the 21 single-object circle "
             f"train prompts; evaluation: the same {TRAIN_SEEDS} seeds x 21 train circles and {HELDOUT_SEEDS} seeds x 3 "
             "held-out circles for every checkpoint, 8 sampling steps, guidance 2. Acceptance = judge score >= 0.8; "
             "'dyn.' = mean optical-flow dynamic degree (the metric reward of row rwr-flow). Seconds: the whole loop "
             "(generation, judging, training, syncs) on this 2-core machine.", "",
             "| row | ablation | train acceptance (base -> each round, or base -> the last) | held-out acceptance | train mean score | "
             "train dyn. | train gain | held-out gain | kept: best_version, train / held-out gain | rows trained / steps | loop s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        ev = r["evals"]
        f = lambda split, k, fmt="{:.3f}": " -> ".join(fmt.format(e[split][k]) for e in ev)  # noqa: E731
        lines.append(f"| {r['name']} | {r['ablation']} | {f('train', 'acceptance')} | {f('heldout', 'acceptance')} | "
                     f"{f('train', 'mean_score')} | {f('train', 'dynamic_degree', '{:.2f}')} | "
                     f"{100 * (ev[-1]['train']['acceptance'] - ev[0]['train']['acceptance']):+.1f} pts | "
                     f"{100 * (ev[-1]['heldout']['acceptance'] - ev[0]['heldout']['acceptance']):+.1f} pts | "
                     f"{kept(r)} | {r['rows_trained']} / {r['optimizer_steps']} | {r['loop_seconds']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="", help=f"comma-separated, from: {', '.join(ROWS)}")
    ap.add_argument("--redo", action="store_true", help="run rows that were already measured again")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args(argv)
    names = [n for n in args.rows.split(",") if n]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        ap.error(f"--rows: unknown {unknown}; allowed: {', '.join(ROWS)}")
    if not args.table_only:
        from ipo_ray.evaluate import set_threads

        set_threads()
        for n in names:
            if (STORE / f"{n}.json").is_file() and not args.redo:
                print(f"{n}: already measured (benchmarks/ablations/{n}.json); --redo to run it again")
                continue
            run_row(n)
            update_section(TITLE, table())
    update_section(TITLE, table())
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
