"""Critic templates, frame sampling, parsers and log-probability scores (pure, fast)."""

import numpy as np
import pytest

from ipo_ray.critic.prompts import (DIMENSIONS, TEMPLATES, answer_token_ids, class_probs, fit_frames, get_template,
                                    parse_binary, parse_pairwise, parse_pointwise, point_score, render, sample_frames)


def test_templates_render_with_video_slots_and_the_papers_criteria():
    pair = render(get_template("pairwise"), "a red square falls down", 16, "smoothness")
    assert [p for p in pair if isinstance(p, int)] == [0, 1]
    text = " ".join(p for p in pair if isinstance(p, str))
    assert '"a red square falls down"' in text and "16 frames" in text and DIMENSIONS["smoothness"] in text
    assert "Tie" in text and "Reason:" in text
    point = render(get_template("pointwise"), "a blue circle grows", 16)
    assert [p for p in point if isinstance(p, int)] == [0]
    assert all(w in " ".join(map(str, point)) for w in ("Good", "Normal", "Bad", "consistency", "fidelity", "smoothness"))
    binary = render(get_template("binary"), "a blue circle grows", 8)
    text = " ".join(map(str, binary))
    for criterion in ("Coherence", "Physical accuracy", "Task completion", "Inconsistencies", "Accept or Reject"):
        assert criterion in text
    assert binary[-1] == 0  # the video comes last, after the prompt (Furuta et al. Appendix B)
    assert {t.version for t in TEMPLATES.values()} == {"v1"}
    with pytest.raises(ValueError, match=r"critic\.prompt_version"):
        get_template("binary", "v0")
    with pytest.raises(ValueError, match=r"critic\.dimension"):
        render(get_template("pointwise"), "x", 8, "beauty")
    braces = render(get_template("binary"), "a {weird} prompt", 8)  # user text is data, not a format string
    assert "a {weird} prompt" in " ".join(map(str, braces))


def test_frames_sampled_uniformly_and_padded_not_cropped():
    v = np.arange(32, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 6, 3), np.uint8)
    s = sample_frames(v, 8)
    assert s.shape == (8, 4, 6, 3) and s[0, 0, 0, 0] == 0 and s[-1, 0, 0, 0] == 31
    assert np.all(np.diff(s[:, 0, 0, 0].astype(int)) > 0)
    short = sample_frames(v[:5], 16)  # shorter clip: all frames, then the last repeated
    assert short.shape[0] == 16 and list(short[:5, 0, 0, 0]) == [0, 1, 2, 3, 4] and np.all(short[5:, 0, 0, 0] == 4)
    big = fit_frames(np.zeros((2, 480, 720, 3), np.uint8), 224 * 224)
    assert big.shape[1] * big.shape[2] <= 224 * 224 and abs(big.shape[2] / big.shape[1] - 1.5) < 0.02
    with pytest.raises(ValueError, match="video"):
        sample_frames(np.zeros((4, 4, 3), np.uint8), 2)


@pytest.mark.parametrize("text,expect", [
    ("Accept", "Accept"), ("reject.", "Reject"), ("**Accept**", "Accept"), ("Rejected: the square vanishes", "Reject"),
    ("I would accept this video", "Accept"), ("Either accept or reject", None), ("", None), (None, None), (42, None)])
def test_parse_binary(text, expect):
    assert parse_binary(text) == expect


@pytest.mark.parametrize("text,expect", [
    ("Good\nReason: smooth", "Good"), ("normal - minor jitter", "Normal"), ("Poor. The object vanishes", "Bad"),
    ("The clip is fine. Rating: Average", "Normal"), ("It is not bad at all", None), ("", None), (None, None)])
def test_parse_pointwise(text, expect):
    assert parse_pointwise(text) == expect


@pytest.mark.parametrize("text,expect", [
    ("A\nReason: B flickers", "A"), ("B", "B"), ("Video B. Reason: ...", "B"), ("Answer: A", "A"), ("Tie", "tie"),
    ("**A**", "A"), ("a red square moves", None), ("Overall, video A is better.", "A"), ("maybe", None), (None, None)])
def test_parse_pairwise(text, expect):
    assert parse_pairwise(text) == expect


def test_answer_ids_and_probabilities():
    from ipo_ray.critic.tiny import QWEN2VL_SPECIAL, critic_words, word_tokenizer

    tok = word_tokenizer(QWEN2VL_SPECIAL, critic_words(), eos="<|im_end|>", pad="<|endoftext|>")
    ids = answer_token_ids(tok, get_template("binary").answers)
    assert ids == {"Accept": [tok.convert_tokens_to_ids("Accept")], "Reject": [tok.convert_tokens_to_ids("Reject")]}
    assert tok.unk_token_id not in sum(answer_token_ids(tok, get_template("pointwise").answers).values(), [])
    logp = np.full(len(tok), -50.0)
    logp[ids["Accept"][0]], logp[ids["Reject"][0]] = np.log(0.3), np.log(0.1)
    p = class_probs(logp, ids)
    assert p["Accept"] == pytest.approx(0.75) and point_score(p) == pytest.approx(0.75)
    assert class_probs({ids["Reject"][0]: -0.1}, ids) == {"Accept": 0.0, "Reject": 1.0}  # vLLM's top-k dict
    assert class_probs({}, ids) is None and class_probs(logp, None) is None
    assert point_score({"Good": 0.5, "Normal": 0.5, "Bad": 0.0}) == pytest.approx(0.75)
