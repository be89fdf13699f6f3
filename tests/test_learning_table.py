"""The learning benchmark's per-shape numbers (benchmarks/learning.py): prompts grouped by what they ask to draw,
acceptance per group from an evaluation's samples.parquet, train split only."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks import learning
from ipo_ray.world.grammar import splits


def test_train_prompts_group_into_21_circles_21_squares_and_8_two_object_scenes():
    train = splits()["train"]
    groups = [learning.shape_group(p) for p in train]
    assert {g: groups.count(g) for g in set(groups)} == {"circle": 21, "square": 21, "two-object": 8}


def test_by_shape_counts_only_train_rows_and_backfill_adds_it_to_a_stored_row(tmp_path, monkeypatch):
    rows = {"prompt": ["a red circle falls down", "a red circle falls down", "a blue square rises up",
                       "a red circle and a green square move toward each other", "a green circle grows"],
            "split": ["train", "train", "train", "train", "heldout"],
            "accepted": [True, False, True, False, True]}
    monkeypatch.setattr(learning, "ROOT", tmp_path)
    for v in (0, 1):
        d = tmp_path / "runs" / "bench-x" / "eval" / f"v{v:06d}"
        d.mkdir(parents=True)
        pq.write_table(pa.table(rows), d / "samples.parquet")
    assert learning.by_shape(d / "samples.parquet") == {"circle": 0.5, "square": 1.0, "two-object": 0.0}
    stored = tmp_path / "x.json"
    stored.write_text(json.dumps({"name": "x", "evals": [{"version": 0}, {"version": 1}]}))
    assert learning.backfill(stored) is True
    assert learning.backfill(stored) is False  # already there
    r = json.loads(stored.read_text())
    assert r["evals"][1]["train_by_shape"]["circle"] == 0.5
    assert "| x | 0.500 -> 0.500 | 1.000 -> 1.000 | 0.000 -> 0.000 |" in learning.shape_table([r])
