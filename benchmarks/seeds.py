"""Seed statistics over learning rows: each setting's gain per seed, its mean, seed SD and standard error, and,
for two settings, the paired difference at matched seeds (the numbers the RESULTS notes quote).

    python benchmarks/seeds.py dpo-beta-k32-pp8 sft-best-of-32-p64 --seeds 0-5

A setting's seed 0 is the row named as given, seed N the row named NAME-seedN (benchmarks/learning/*.json, written
by benchmarks/learning.py); missing seeds are named and skipped, and the pairing uses the seeds both settings have.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.learning import STORE as ROWS  # noqa: E402  (the rows benchmarks/learning.py writes)
SPLITS = ("train", "heldout")


def mean_sd_se(xs: list[float]) -> tuple[float, float, float]:
    """Mean, sample standard deviation (n - 1) and standard error of the mean; SD and SE are nan below two values."""
    if not xs:
        raise ValueError("mean_sd_se: no values")
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, math.nan, math.nan
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    return m, sd, sd / math.sqrt(len(xs))


def gains(evals: list[dict]) -> dict[str, float]:
    """Points gained from the first evaluation (the base) to the last, per split, and whether every round beat the
    one before on that split."""
    out: dict[str, float] = {}
    for s in SPLITS:
        xs = [e[s] for e in evals]
        out[s] = 100.0 * (xs[-1] - xs[0])
        out[s + "_monotone"] = all(b > a for a, b in zip(xs, xs[1:]))
    return out


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds.extend(range(int(lo), int(hi or lo) + 1))
    return seeds


def load(name: str, seeds: list[int]) -> dict[int, dict[str, float]]:
    found: dict[int, dict[str, float]] = {}
    for seed in seeds:
        path = ROWS / f"{name if seed == 0 else f'{name}-seed{seed}'}.json"
        if path.exists():
            found[seed] = gains(json.loads(path.read_text())["evals"])
        else:
            print(f"{name}: no row for seed {seed} ({path.name})", file=sys.stderr)
    if not found:
        raise SystemExit(f"{name}: no rows in {ROWS} for seeds {seeds}")
    return found


def _line(label: str, xs: list[float]) -> str:
    m, sd, se = mean_sd_se(xs)
    return f"  {label:<8} " + ", ".join(f"{x:+.1f}" for x in xs) + f"  mean {m:+.1f}  SD {sd:.1f}  SE {se:.1f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("settings", nargs="+", help="one or two row names (seed 0's name)")
    ap.add_argument("--seeds", default="0-3", help="seeds, e.g. 0-5 or 0,2,4")
    args = ap.parse_args(argv)
    if len(args.settings) > 2:
        ap.error("settings: give one or two row names")
    seeds = parse_seeds(args.seeds)
    per = {name: load(name, seeds) for name in args.settings}
    for name, rows in per.items():
        print(f"{name} (seeds {', '.join(map(str, rows))}), points over the base:")
        for s in SPLITS:
            mono = sum(r[s + "_monotone"] for r in rows.values())
            print(_line(s, [r[s] for r in rows.values()]) + f"  every round better at {mono}/{len(rows)}")
    if len(per) == 2:
        (a, ra), (b, rb) = per.items()
        common = [s for s in ra if s in rb]
        print(f"{a} minus {b}, paired at seeds {', '.join(map(str, common))}:")
        for s in SPLITS:
            d = [ra[k][s] - rb[k][s] for k in common]
            m, _, se = mean_sd_se(d)
            print(_line(s, d) + (f"  t {m / se:.1f}" if se and not math.isnan(se) else ""))


if __name__ == "__main__":
    main()
