"""Groups -> training rows: DPO pair selection (one pair, or several disjoint pairs per group)."""

from __future__ import annotations

import numpy as np

from ipo_ray.rows import to_training_rows


def _group(scores, group="g0"):
    return [{"sample_id": f"{group}-s{i}", "group_id": group, "prompt": "a red square falls down", "round": 0,
             "policy_version": 0, "seed": i, "score": sc, "label": "Good" if sc >= 0.8 else "Bad",
             "critic_text": "", "valid": True, "latents": np.zeros(2, np.float32).tobytes(), "latent_shape": [2],
             "frames_path": ""} for i, sc in enumerate(scores)]


def test_one_pair_is_best_vs_worst():
    rows, counts = to_training_rows(_group([0.1, 0.9, 0.5, 0.0]), "dpo", min_score_gap=0.2)
    assert [(r["score"], r["score_l"]) for r in rows] == [(0.9, 0.0)] and counts["rows"] == 1


def test_several_disjoint_pairs_each_above_the_gap():
    scores = [0.0, 1.0, 0.95, 0.1, 0.6, 0.5, 0.55, 0.9]
    rows, counts = to_training_rows(_group(scores), "dpo", min_score_gap=0.3, pairs_per_group=4)
    # sorted: 0.0 0.1 0.5 0.55 | 0.6 0.9 0.95 1.0 -> (1.0, 0.0), (0.95, 0.1), (0.9, 0.5); (0.6, 0.55) is under the gap.
    assert [(r["score"], r["score_l"]) for r in rows] == [(1.0, 0.0), (0.95, 0.1), (0.9, 0.5)]
    ids = [r["sample_id"] for r in rows] + [r["sample_id_l"] for r in rows]
    assert len(set(ids)) == len(ids) and len({r["row_id"] for r in rows}) == 3
    assert counts["rows"] == 3
    # A group with no contrast gives nothing, and says so.
    rows, counts = to_training_rows(_group([0.5] * 8, "g1"), "dpo", min_score_gap=0.3, pairs_per_group=4)
    assert rows == [] and counts["groups_no_contrast"] == 1


def test_accepted_pairing_makes_every_accepted_sample_a_chosen_one():
    # 4 accepted (>= 0.8), 2 below: each accepted is paired with a rejected one, the worst first, reused in turn.
    scores = [0.9, 0.0, 1.0, 0.85, 0.3, 0.8]
    rows, counts = to_training_rows(_group(scores), "dpo", min_score_gap=0.3, pairs_per_group=1, pairing="accepted")
    assert [(r["score"], r["score_l"]) for r in rows] == [(1.0, 0.0), (0.9, 0.3), (0.85, 0.0), (0.8, 0.3)]
    assert len({r["row_id"] for r in rows}) == 4 and len({r["sample_id"] for r in rows}) == 4
    assert counts["rows"] == 4
    # The gap still applies: 0.82 pairs with 0.1, while 0.8 against 0.65 is too close and gives no pair.
    rows, _ = to_training_rows(_group([0.8, 0.65, 0.82, 0.1]), "dpo", min_score_gap=0.3, pairing="accepted")
    assert [(r["score"], r["score_l"]) for r in rows] == [(0.82, 0.1)]
    # No accepted sample (or no rejected one): the rank pairs, as without the option.
    for sc in ([0.7, 0.1, 0.4, 0.0], [0.9, 0.95, 0.8, 0.85]):
        a, _ = to_training_rows(_group(sc), "dpo", min_score_gap=0.1, pairs_per_group=2, pairing="accepted")
        b, _ = to_training_rows(_group(sc), "dpo", min_score_gap=0.1, pairs_per_group=2)
        assert [r["row_id"] for r in a] == [r["row_id"] for r in b]
    assert len(a) == 1 and len(to_training_rows(_group([0.7, 0.1, 0.4, 0.0]), "dpo", 0.1, pairs_per_group=2)[0]) == 2


def test_best_of_n_sft_keeps_only_the_samples_it_trains_on():
    scores = [0.1, 0.85, 0.79, 0.8, 0.0]
    rows, counts = to_training_rows(_group(scores), "sft", sft_threshold=0.8)
    assert sorted(r["score"] for r in rows) == [0.8, 0.85] and all(r["kind"] == "point" for r in rows)
    assert counts["rows"] == 2 and counts["sft_below_threshold"] == 3
    # Strict best-of-N: at most n accepted samples a group, the best first (ties: the lower seed).
    rows, counts = to_training_rows(_group([0.9, 0.95, 0.1, 0.95, 0.85]), "sft", sft_threshold=0.8, sft_per_group=2)
    assert [(r["score"], r["seed"]) for r in rows] == [(0.95, 1), (0.95, 3)]
    assert counts["sft_over_group_cap"] == 2 and counts["sft_below_threshold"] == 1
    # RWR and KTO weight every sample, so they keep every sample.
    for algo in ("rwr", "kto"):
        rows, counts = to_training_rows(_group(scores), algo)
        assert len(rows) == 5 and counts["rows"] == 5
