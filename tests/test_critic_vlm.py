"""The transformers VLM backend with a tiny random Qwen2-VL built from config (real processor, tokenizer,
image processor and model classes; nothing downloaded). A random model answers at random: these tests
check the plumbing (prompt built, frames through the real processor and model, log-prob scores in [0, 1],
unparsable answers counted, drop / abstain, the position swap), not judgement."""

import numpy as np
import pytest
import torch

from ipo_ray.config import CriticConfig
from ipo_ray.critic import make_critic
from ipo_ray.critic.prompts import class_probs, get_template, render
from ipo_ray.critic.protocols import VLMCritic
from ipo_ray.critic.vlm import Request, TransformersEngine
from ipo_ray.world import render as render_video

PROMPT = "a red square falls down"
FRAMES = 4


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    from ipo_ray.critic.tiny import build_tiny_qwen2vl

    torch.set_num_threads(1)
    return str(build_tiny_qwen2vl(tmp_path_factory.mktemp("vlm") / "tiny-qwen2vl"))


@pytest.fixture(scope="module")
def critic(tiny_vlm):
    """Built the way the loop builds it: ``make_critic`` from the config, loading the checkpoint directory."""
    return make_critic(CriticConfig(backend="transformers", model=tiny_vlm, protocol="binary", num_frames=FRAMES,
                                    max_new_tokens=4, batch_size=4))


@pytest.fixture(scope="module")
def videos():
    return [render_video(PROMPT, s) for s in range(2)] + [render_video(PROMPT, 7, flaw="frozen")]


def _bias(engine, word: str | None):
    """Steer the real model's greedy text with transformers' own ``sequence_bias`` (raw logits unchanged)."""
    tok = engine.tokenizer
    engine.model.generation_config.sequence_bias = {(tok.convert_tokens_to_ids(word),): 100.0} if word else None


def _critic(engine, protocol, **kw):
    return VLMCritic(engine, protocol, num_frames=FRAMES, **kw)


def test_make_critic_loads_real_classes_and_builds_the_prompt(critic, videos):
    from transformers import PreTrainedTokenizerBase, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil, Qwen2VLProcessor

    eng = critic.engine
    assert isinstance(critic, VLMCritic) and isinstance(eng, TransformersEngine)
    assert isinstance(eng.model, Qwen2VLForConditionalGeneration) and isinstance(eng.processor, Qwen2VLProcessor)
    assert isinstance(eng.processor.image_processor, Qwen2VLImageProcessorPil)
    assert isinstance(eng.tokenizer, PreTrainedTokenizerBase)
    parts = render(get_template("pairwise"), PROMPT, FRAMES)
    frames = [critic._frames("pairwise", v) for v in videos[:2]]
    texts, images, inputs = eng.encode([Request(parts, frames)])
    assert PROMPT in texts[0] and texts[0].count("<|image_pad|>") == 2 * FRAMES  # before expansion
    assert len(images) == 2 * FRAMES and np.array_equal(images[0], frames[0][0])
    assert inputs["image_grid_thw"].shape == (2 * FRAMES, 3)  # every frame through the image processor
    n_tokens = int((inputs["input_ids"] == eng.model.config.image_token_id).sum())
    assert n_tokens == int(inputs["image_grid_thw"].prod(-1).sum()) // 4  # merge 2x2


def test_random_answers_are_counted_unparsable_then_dropped_or_abstained(critic, videos):
    _bias(critic.engine, None)
    critic.stats.clear()
    js = critic.judge_group(PROMPT, videos)
    s = critic.summary()
    assert len(js) == 3 and s["answers"] == 3 and 0.0 <= s["unparsable_rate"] <= 1.0
    for j in js:
        assert 0.0 <= j.score <= 1.0 and j.text is not None
        assert j.valid == (j.label in ("Good", "Bad"))  # invalid exactly when the text was unparsable
    assert s.get("unparsable", 0) == sum(not j.valid for j in js) == s.get("dropped", 0)
    _bias(critic.engine, "frames")  # a word that is no verdict: every answer unparsable
    abstain = _critic(critic.engine, "binary", on_unparsable="abstain")
    js = abstain.judge_group(PROMPT, videos)
    assert abstain.stats["unparsable"] == abstain.stats["abstained"] == 3
    assert all(j.valid and j.label == "Normal" and j.score == 0.5 and j.text.startswith("[abstained") for j in js)
    dropped = _critic(critic.engine, "pointwise").judge_group(PROMPT, videos)
    assert not any(j.valid for j in dropped)
    _bias(critic.engine, None)


def test_score_from_log_probabilities(critic, videos):
    """When the written verdict is the verdict the first-token probabilities prefer, the score is
    P(Accept) / (P(Accept) + P(Reject)) of the real model's logits."""
    eng = critic.engine
    _bias(eng, None)
    parts = render(get_template("binary"), PROMPT, FRAMES)
    reply = eng.generate([Request(parts, [critic._frames("binary", videos[0])])], max_new_tokens=1)[0]
    ids = eng.answer_ids(get_template("binary").answers)
    p = class_probs(reply.logprobs, ids)
    assert reply.logprobs.shape[0] == eng.model.config.text_config.vocab_size
    assert np.exp(reply.logprobs).sum() == pytest.approx(1.0, abs=1e-3)
    favourite = max(p, key=p.get)
    _bias(eng, favourite)
    c = _critic(eng, "binary")
    j = c.judge_group(PROMPT, videos[:1])[0]
    _bias(eng, None)
    assert j.valid and j.label == ("Good" if favourite == "Accept" else "Bad")
    assert j.score == pytest.approx(p["Accept"], abs=1e-4) and 0.0 < j.score < 1.0
    assert c.stats["logprob_scores"] == 1 and c.stats.get("unparsable", 0) == 0


def test_position_swap_filter_through_the_model(critic, videos):
    """A critic that always says "A" contradicts itself when the videos swap places: no verdict survives
    and no pair is proposed. One that always says "Tie" is consistent: all ties, no pair."""
    eng = critic.engine
    _bias(eng, "A")
    biased = _critic(eng, "pairwise")
    js = biased.judge_group(PROMPT, videos)
    s = biased.summary()
    assert s["pairs"] == 3 and s["answers"] == 6 and s["inconsistent"] == 3 and s["consistency_rate"] == 0.0
    assert all(j.score == 0.5 and j.role == "" and not j.valid for j in js)  # no signal: not trained on
    assert biased.compare(PROMPT, videos[0], videos[1]).winner is None
    from ipo_ray.critic.noise import NoisyCritic  # the noise model over a VLM keeps its swap filter

    noisy = NoisyCritic(_critic(eng, "pairwise"), accuracy=1.0, protocol="pairwise").judge_group(PROMPT, videos)
    assert all(j.role == "" and not j.valid for j in noisy)
    _bias(eng, "Tie")
    ties = _critic(eng, "pairwise")
    js = ties.judge_group(PROMPT, videos)
    s = ties.summary()
    assert s["consistent"] == 3 and s["ties"] == 3 and s["tie_rate"] == 1.0 and s["consistency_rate"] == 1.0
    assert all(j.role == "" and j.label == "Normal" for j in js)
    _bias(eng, "frames")  # every answer unparsable: abstain gives ties, counted apart from (in)consistency
    abstain = _critic(eng, "pairwise", on_unparsable="abstain")
    js = abstain.judge_group(PROMPT, videos)
    s = abstain.summary()
    assert s["abstained_pairs"] == 3 and s.get("inconsistent", 0) == 0 and s.get("consistent", 0) == 0
    assert all(j.valid and j.score == 0.5 and j.role == "" for j in js)
    _bias(eng, "Good")
    point = _critic(eng, "pointwise")
    assert [j.label for j in point.judge_group(PROMPT, videos)] == ["Good"] * 3
    _bias(eng, None)


@pytest.mark.parametrize("protocol", ["pairwise", "pointwise", "binary"])
def test_make_critic_selects_each_protocol(tiny_vlm, videos, protocol):
    from ipo_ray.critic.noise import NoisyCritic

    c = make_critic(CriticConfig(backend="transformers", model=tiny_vlm, protocol=protocol, num_frames=2,
                                 max_new_tokens=2, noise_accuracy=0.9 if protocol == "pairwise" else None))
    inner = c.inner if isinstance(c, NoisyCritic) else c
    assert isinstance(inner, VLMCritic) and inner.protocol == protocol and inner.name == f"transformers:{tiny_vlm}"
    js = c.judge_group(PROMPT, videos[:2])
    assert len(js) == 2 and all(0.0 <= j.score <= 1.0 for j in js)


def test_bad_model_path_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"^critic\.model: cannot load") as err:
        make_critic(CriticConfig(backend="transformers", model=str(tmp_path), protocol="binary"))
    assert "\n" not in str(err.value)
