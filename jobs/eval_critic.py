"""Entrypoint: pairwise / pointwise accuracy of the configured critic (same flags as ``ipo-ray eval-critic``).

    python jobs/eval_critic.py --config configs/world-tiny.yaml --world-set runs/critic-eval \
        --set critic.noise_accuracy=0.8 --set critic.protocol=pairwise
    python jobs/eval_critic.py --config configs/cogvideox-2b.yaml --data labels.parquet --out acc.json

``--data``: a labelled JSONL / Parquet file (format in ``ipo_ray/critic/evaluation.py``, docs/CRITICS.md).
``--world-set DIR``: evaluate on ``DIR/labels.jsonl``, first writing it (world videos labelled by the world
judge) if it does not exist.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/world-tiny.yaml", help="YAML config file (its critic section is used)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set critic.noise_accuracy=0.8 (repeatable)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="labelled data: .jsonl or .parquet")
    src.add_argument("--world-set", metavar="DIR", help="a world labelled set (made here if DIR/labels.jsonl is missing)")
    p.add_argument("--pairs", type=int, default=100, help="world set: pairwise items")
    p.add_argument("--points", type=int, default=100, help="world set: pointwise items")
    p.add_argument("--annotators", type=int, default=1, help="world set: simulated annotators per item")
    p.add_argument("--annotator-accuracy", type=float, default=1.0, help="world set: each annotator's accuracy")
    p.add_argument("--seed", type=int, default=0, help="world set: seed")
    p.add_argument("--out", help="also write the results JSON here")


def run(args) -> int:
    from ipo_ray.config import load_config
    from ipo_ray.critic import make_critic
    from ipo_ray.critic.evaluation import evaluate, read_labelled, world_labelled_set

    cfg = load_config(args.config, args.overrides)
    if args.data:
        data = Path(args.data)
    else:
        data = world_labelled_set(args.world_set, pairs=args.pairs, points=args.points, seed=args.seed,
                                  annotators=args.annotators, annotator_accuracy=args.annotator_accuracy,
                                  frames=cfg.model.frames, size=cfg.model.height)
    items = read_labelled(data)
    result = {"data": str(data), "backend": cfg.critic.backend, "protocol": cfg.critic.protocol,
              "noise_accuracy": cfg.critic.noise_accuracy, **evaluate(make_critic(cfg.critic), items)}
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from jobs.cli import main

    sys.exit(main(["eval-critic", *sys.argv[1:]]))
