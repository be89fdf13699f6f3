import numpy as np
import pytest

from ipo_ray.world import ACCEPT, FLAWS, judge, judge_details, parse_prompt, render, splits
from ipo_ray.world.grammar import CATEGORIES, vocabulary

ALL = splits()["train"] + splits()["heldout"]


def by_category():
    out = {c: [] for c in CATEGORIES}
    for p in ALL:
        out[parse_prompt(p).category].append(p)
    return out


def test_grammar_accepts_the_contract_prompts():
    for c in ("red", "green", "blue", "yellow"):
        for s in ("square", "circle"):
            for m in ("moves from left to right", "moves from right to left", "falls down", "rises up"):
                assert parse_prompt(f"a {c} {s} {m}").objects == ((c, s),)
    scene = parse_prompt("a red square and a blue circle move toward each other")
    assert scene.category == "toward" and scene.objects == (("red", "square"), ("blue", "circle"))


@pytest.mark.parametrize("bad,word", [("a purple square grows", "purple"), ("a red hexagon grows", "hexagon"),
                                      ("a red square dances", "dances"), ("red square", "does not follow")])
def test_grammar_errors_name_the_word(bad, word):
    with pytest.raises(ValueError, match=word):
        parse_prompt(bad)


def test_render_is_deterministic_and_seed_dependent():
    p = "a blue circle falls down"
    a, b, c = render(p, 3), render(p, 3), render(p, 4)
    assert a.dtype == np.uint8 and a.shape == (8, 16, 16, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_every_category_is_rendered_correctly():
    for cat, prompts in by_category().items():
        scores = np.array([judge(render(p, s), p) for p in prompts for s in range(10)])
        assert scores.mean() >= 0.95, cat
        assert (scores >= ACCEPT).mean() >= 0.97, cat


@pytest.mark.parametrize("flaw", FLAWS)
def test_judge_rejects_each_flaw_in_every_category(flaw):
    for cat, prompts in by_category().items():
        scores = np.array([judge(render(p, s, flaw=flaw), p) for p in prompts for s in range(6)])
        assert (scores >= ACCEPT).mean() <= 0.05, (flaw, cat, scores.mean())
        assert scores.mean() < 0.65, (flaw, cat)


def test_judge_rejects_noise_static_and_empty_videos():
    rng = np.random.default_rng(0)
    for p in ALL:
        assert judge(rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8), p) < 0.2
        assert judge(np.zeros((8, 16, 16, 3), np.uint8), p) == 0.0
        still = np.repeat(render(p, 0)[:1], 8, axis=0)
        assert judge(still, p) < 0.5


def test_judge_details_explain_the_score():
    p = "a red square moves from left to right"
    d = judge_details(render(p, 1, flaw="reversed"), p)
    assert d["motion"] == 0.0 and d["presence"] == 1.0 and d["score"] == 0.0
    assert judge_details(render(p, 1, flaw="wrong_color"), p)["presence"] == 0.0


def test_splits_hold_out_combinations_not_words():
    sp = splits()
    assert len(sp["train"]) >= 40 and len(sp["heldout"]) >= 8
    assert not set(sp["train"]) & set(sp["heldout"])
    train_words = set(" ".join(sp["train"]).split())
    assert set(" ".join(sp["heldout"]).split()) <= train_words
    assert set(vocabulary()) == train_words
    cats = {parse_prompt(p).category for p in sp["heldout"]}
    assert {"move", "toward"} <= cats


def test_box_fill_tells_rendered_squares_from_circles_and_ignores_stray_pixels():
    from benchmarks.shape_size import box_fill

    sq, ci = "a red square grows", "a red circle grows"
    square, circle = render(sq, 3), render(ci, 3)
    assert box_fill(square, sq) == (1.0, 1.0)
    fill, corners = box_fill(circle, ci)
    assert corners == 0.0 and 0.6 < fill < 0.9
    spurred = square.copy()
    ys, xs = np.nonzero(square[4].max(-1) >= 128)
    spurred[4, ys.min() - 1, xs.min() + 2] = (255, 0, 0)  # one stray pixel above the square breaks the judge's box
    assert box_fill(spurred, sq) == (1.0, 1.0)
    assert judge_details(spurred, sq)["shape"] < judge_details(square, sq)["shape"]


def test_pretrain_sweep_splits_acceptance_by_the_learning_rows_shape_groups():
    from benchmarks.pretrain_sweep import by_shape

    per_prompt = {"a red square falls down": 0.25, "a blue square grows": 0.75, "a red circle rises up": 1.0,
                  "a red circle and a green square move toward each other": 0.5}
    assert by_shape(per_prompt) == {"circle": 1.0, "square": 0.5, "two-object": 0.5}
    assert by_shape({"a red circle rises up": 0.5}) == {"circle": 0.5}
