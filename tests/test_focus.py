"""Rollout focus (``loop.focus_explore``): weights, group allocation, history from the run's samples, the
round's items and seeds, the config checks, and versions compared on common prompts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ipo_ray.config import ConfigError
from ipo_ray.focus import allocate_groups, focus_weights, prompt_contrast, read_history
from ipo_ray.policy import seeds_for
from ipo_ray.report import rollout_acceptance
from jobs.loop import round_items

from .conftest import tiny_config


def test_contrast_and_weights():
    history = {"a": (3, 8), "b": (0, 8), "c": (8, 8)}
    assert prompt_contrast(history) == {"a": True, "b": False, "c": False}
    w = focus_weights(["a", "b", "c", "d"], history, explore=0.25)
    assert w.tolist() == [1.0, 0.25, 0.25, 1.0]  # d never rolled out: weighs 1
    # explore 0 and no contrast anywhere: no prompt would be drawn, so every prompt weighs the same
    assert focus_weights(["b", "c"], history, explore=0.0).tolist() == [1.0, 1.0]
    assert focus_weights(["a", "b"], history, explore=0.0).tolist() == [1.0, 0.0]


@pytest.mark.parametrize("seed", range(5))
def test_allocation_is_floor_or_ceil_of_the_share_and_sums_to_n(seed):
    w = np.array([1.0, 1.0, 0.25, 0.25, 0.0, 1.0, 0.5])
    n = 13
    counts = allocate_groups(w, n, np.random.default_rng(seed))
    share = n * w / w.sum()
    assert counts.sum() == n
    assert (counts >= np.floor(share)).all() and (counts <= np.ceil(share)).all()
    assert counts[4] == 0
    assert (allocate_groups(w, n, np.random.default_rng(seed)) == counts).all()  # seeded


def test_allocation_is_unbiased_over_seeds():
    w = np.array([1.0, 0.2, 0.2, 0.2, 1.0])
    mean = np.mean([allocate_groups(w, 3, np.random.default_rng(s)) for s in range(4000)], axis=0)
    assert np.allclose(mean, 3 * w / w.sum(), atol=0.03)


def test_allocation_rejects_bad_weights():
    with pytest.raises(ValueError, match="non-negative with a positive sum"):
        allocate_groups(np.zeros(3), 4, np.random.default_rng(0))
    with pytest.raises(ValueError, match="non-negative"):
        allocate_groups(np.array([1.0, -1.0]), 4, np.random.default_rng(0))


def _write_samples(run, r, rows):
    d = run / "samples" / f"round_{r:03d}"
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({k: [x[k] for x in rows] for k in rows[0]}), d / "part-0.parquet")


def test_history_is_each_prompts_latest_round(tmp_path):
    _write_samples(tmp_path, 0, [{"prompt": p, "score": s, "policy_version": 0}
                                 for p, s in [("a", 0.9), ("a", 0.1), ("b", 0.0), ("b", 0.2)]])
    _write_samples(tmp_path, 1, [{"prompt": "a", "score": s, "policy_version": 1} for s in (0.9, 0.95, 0.8)])
    assert read_history(tmp_path / "samples", 1, 0.8) == {"a": (1, 2), "b": (0, 2)}
    assert read_history(tmp_path / "samples", 2, 0.8) == {"a": (3, 3), "b": (0, 2)}  # a's latest: round 1
    assert read_history(tmp_path / "samples", 0, 0.8) == {}


def test_round_items_without_history_are_one_group_per_prompt():
    cfg = tiny_config("loop.prompts_per_round=4")
    prompts = [f"p{i}" for i in range(6)]
    items = round_items(prompts, cfg, 2)
    assert len(items) == 4 and len({it["prompt"] for it in items}) == 4
    assert all(it["repeat"] == 0 and it["group_id"] == f"r002-p{it['prompt_index']:05d}" for it in items)
    assert items == round_items(prompts, cfg, 2)


def test_round_items_budget_above_the_prompt_count_is_one_group_per_prompt():
    prompts = [f"p{i}" for i in range(4)]
    items = round_items(prompts, tiny_config("loop.prompts_per_round=10"), 0)
    assert sorted(it["prompt"] for it in items) == prompts and all(it["repeat"] == 0 for it in items)
    assert items == round_items(prompts, tiny_config("loop.prompts_per_round=4"), 0)  # the same groups as a cap of 4


def test_round_items_with_history_focus_on_contrast_with_unique_seeds():
    cfg = tiny_config("loop.prompts_per_round=12", "loop.focus_explore=0.0")
    prompts = ["a", "b", "c", "d"]
    history = {"a": (2, 8), "b": (0, 8), "c": (8, 8), "d": (5, 8)}  # a and d hold contrast
    items = round_items(prompts, cfg, 1, history)
    assert sorted(it["prompt"] for it in items) == ["a"] * 6 + ["d"] * 6
    ids = [it["group_id"] for it in items]
    assert len(set(ids)) == 12 and "r001-p00000" in ids and "r001-p00000-g5" in ids
    assert sorted(it["repeat"] for it in items if it["prompt"] == "a") == list(range(6))
    # every group of a prompt draws other seeds; the first group's seeds are the unfocused ones
    seeds = [s for it in items for s in seeds_for(it["prompt_index"], 8, cfg.seed, 1, it["repeat"])]
    assert len(set(seeds)) == len(seeds) == 96
    assert seeds_for(0, 8, 0, 1, 0) == seeds_for(0, 8, 0, 1)
    assert items == round_items(prompts, cfg, 1, history)


def test_focus_config_checks():
    with pytest.raises(ConfigError, match=r"^config error: loop.focus_explore: only in rounds mode"):
        tiny_config("loop.focus_explore=0.2", "loop.mode=semi_online")
    with pytest.raises(ConfigError, match=r"^config error: loop.focus_explore: needs per-sample critic scores"):
        tiny_config("loop.focus_explore=0.2", "critic.protocol=pairwise")
    with pytest.raises(ConfigError, match=r"^config error: loop.focus_explore: .*less than or equal to 1"):
        tiny_config("loop.focus_explore=1.5")


def test_versions_compared_on_common_prompts(tmp_path):
    # v0 rolled out a (all rejected) and b (half accepted); v1, focused, only b (3 of 4) and c (all accepted)
    _write_samples(tmp_path, 0, [{"prompt": p, "score": s, "policy_version": 0}
                                 for p, s in [("a", 0.1)] * 4 + [("b", 0.9), ("b", 0.1)]])
    _write_samples(tmp_path, 1, [{"prompt": p, "score": s, "policy_version": 1}
                                 for p, s in [("b", 0.9)] * 3 + [("b", 0.2)] + [("c", 1.0)] * 4])
    pooled = {r["policy_version"]: r for r in rollout_acceptance(tmp_path)}
    assert pooled[0]["acceptance"] == pytest.approx(1 / 6) and pooled[1]["acceptance"] == pytest.approx(7 / 8)
    common = {r["policy_version"]: r for r in rollout_acceptance(tmp_path, common_prompts=True)}
    assert common[0]["prompts"] == common[1]["prompts"] == 1  # only b
    assert common[0]["acceptance"] == pytest.approx(0.5) and common[1]["acceptance"] == pytest.approx(0.75)
    assert common[0]["n"] == 2 and common[1]["n"] == 4
