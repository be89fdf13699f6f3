"""The pairwise protocol: the position-swap filter, ranking a group, and the pair reaching the DPO rows;
``make_critic`` builds every backend the loop can select."""

import numpy as np
import pytest

from ipo_ray.config import CriticConfig, load_config
from ipo_ray.critic import WorldCritic, make_critic
from ipo_ray.critic.base import MetricCritic, PairVerdict
from ipo_ray.critic.noise import NoisyCritic
from ipo_ray.critic.protocols import pairwise_judgements, rank_group, swap_verdict
from ipo_ray.rows import to_training_rows
from ipo_ray.world import judge, render

from .conftest import ROOT

PROMPT = "a yellow circle moves from right to left"


@pytest.mark.parametrize("first,second,expect", [
    ("A", "B", "A"), ("B", "A", "B"), ("tie", "tie", "tie"),  # consistent across the swap
    ("A", "A", None), ("B", "B", None),  # position bias: always the first / second shown
    ("A", "tie", None), ("tie", "B", None)])
def test_swap_verdict_keeps_only_consistent_answers(first, second, expect):
    assert swap_verdict(first, second) == expect


def test_rank_group_scores_and_picks_a_consistent_pair():
    v = {(0, 1): PairVerdict("B", 0.0), (0, 2): PairVerdict("A", 1.0), (1, 2): PairVerdict("A", 0.9),
         (0, 3): PairVerdict(None), (1, 3): PairVerdict("tie", 0.5), (2, 3): PairVerdict(None)}
    scores, seen, pair = rank_group(4, v)
    assert scores == pytest.approx([0.5, 0.8, 0.05, 0.5]) and seen == [2, 3, 2, 1]
    assert pair == (1, 2)
    # the widest-apart pair with no consistent verdict of its own is skipped for the next one
    v2 = {(0, 1): PairVerdict("A", 1.0), (0, 2): PairVerdict(None), (1, 2): PairVerdict("A", 1.0)}
    scores, _, pair = rank_group(3, v2)
    assert scores == [1.0, 0.5, 0.0] and pair == (0, 1)
    assert rank_group(3, {(0, 1): PairVerdict(None), (0, 2): PairVerdict("tie", 0.5), (1, 2): PairVerdict(None)})[2] is None
    js = pairwise_judgements(3, v2)
    assert [j.role for j in js] == ["chosen", "rejected", ""] and [j.label for j in js] == ["Good", "Normal", "Bad"]
    unparsable = {(0, 1): PairVerdict(None, parsed=False)}
    assert [j.valid for j in pairwise_judgements(2, unparsable)] == [False, False]
    assert [j.valid for j in pairwise_judgements(2, unparsable, "abstain")] == [True, True]
    # parsed but never swap-consistent: no signal, so not a training sample in drop mode
    inconsistent = {(0, 1): PairVerdict(None), (0, 2): PairVerdict("A", 1.0), (1, 2): PairVerdict(None)}
    assert [j.valid for j in pairwise_judgements(3, inconsistent)] == [True, False, True]


def _samples(videos, roles=None, scores=None):
    return [{"sample_id": f"s{i}", "group_id": "g", "prompt": PROMPT, "round": 0, "policy_version": 0, "seed": i,
             "frames": v, "latents": b"", "latent_shape": [1], "latent_dtype": "float32"} for i, v in enumerate(videos)]


def test_pairwise_world_critic_rows_through_the_actor_path():
    """``make_critic`` with protocol pairwise ranks the group pair by pair; ``actors.critic.judge_samples``
    carries the verdict pair to ``to_training_rows``, which uses it for the DPO pair."""
    from actors.critic import judge_samples

    cfg = load_config(ROOT / "configs" / "world-tiny.yaml", ["critic.protocol=pairwise"])
    critic = make_critic(cfg.critic)
    assert isinstance(critic, NoisyCritic) and critic.accuracy == 1.0 and critic.name == "world"
    videos = [render(PROMPT, 0), render(PROMPT, 1, flaw="vanish"), render(PROMPT, 2, flaw="frozen"), render(PROMPT, 3)]
    truth = [judge(v, PROMPT) for v in videos]
    samples = _samples(videos)
    judge_samples(critic, samples)
    roles = {s["pair_role"]: s["sample_id"] for s in samples if s["pair_role"]}
    assert truth[int(roles["chosen"][1:])] == max(truth) and truth[int(roles["rejected"][1:])] == min(truth)
    rows, counts = to_training_rows(samples, "dpo", min_score_gap=0.99, critic=critic.name)
    assert counts["pairs_from_verdict"] == 1 and len(rows) == 1  # the verdict pair, not the score gap, decides
    assert (rows[0]["sample_id"], rows[0]["sample_id_l"]) == (roles["chosen"], roles["rejected"])
    rows, _ = to_training_rows(samples, "kto", critic=critic.name)
    assert len(rows) == 4 and {r["kind"] for r in rows} == {"point"}


def test_rows_without_roles_are_unchanged():
    videos = [render(PROMPT, 0), render(PROMPT, 1, flaw="vanish")]
    samples = _samples(videos)
    for s, j in zip(samples, WorldCritic().judge_group(PROMPT, videos)):
        s.update(score=j.score, label=j.label, critic_text=j.text, valid=j.valid)
    rows, counts = to_training_rows(samples, "dpo", min_score_gap=0.0)
    assert len(rows) == 1 and counts["pairs_from_verdict"] == 0 and rows[0]["sample_id"] == "s0"


def test_make_critic_builds_each_score_backend():
    """(clip: tests/test_critic_metrics.py; transformers: tests/test_critic_vlm.py; vllm: test_critic_vllm.py)"""
    assert isinstance(make_critic(CriticConfig()), WorldCritic)
    assert isinstance(make_critic(CriticConfig(backend="flow")), MetricCritic)
    assert make_critic(CriticConfig(backend="flicker")).name == "flicker"
    noisy = make_critic(CriticConfig(backend="world", noise_accuracy=0.8, protocol="pointwise"))
    assert isinstance(noisy, NoisyCritic) and noisy.name == "world~acc0.8" and noisy.protocol == "pointwise"
    pair = make_critic(CriticConfig(backend="flicker", protocol="pairwise"))
    assert isinstance(pair, NoisyCritic) and pair.accuracy == 1.0 and pair.inner.name == "flicker"
    preset = load_config(ROOT / "configs" / "cogvideox-2b.yaml").critic
    assert preset.backend == "vllm" and preset.protocol == "pairwise" and preset.model.startswith("Qwen/")
    assert preset.frames_for() == 16 and CriticConfig(protocol="binary").frames_for() == 8


def test_vllm_backend_without_vllm_is_a_clear_error():
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"^critic\.backend: 'vllm' needs the vllm package"):
            make_critic(CriticConfig(backend="vllm", model="Qwen/Qwen2.5-VL-7B-Instruct", protocol="binary"))
    else:
        pytest.skip("vllm is installed here; tests/test_critic_vllm.py covers it")


@pytest.mark.parametrize("override,expect", [
    (["critic.backend=vllm"], r"critic\.model is required"),
    (["critic.backend=transformers", "critic.model=x"], r"critic\.protocol must be pairwise, pointwise or binary"),
    (["critic.dimension=beauty"], r"^config error: critic\.dimension"),
    (["critic.noise_accuracy=0.4"], r"^config error: critic\.noise_accuracy"),
])
def test_critic_config_errors_name_the_field(override, expect):
    from ipo_ray.config import ConfigError

    with pytest.raises(ConfigError, match=expect) as err:
        load_config(ROOT / "configs" / "world-tiny.yaml", override)
    assert "\n" not in str(err.value)


def test_compare_of_score_critics():
    good, bad = render(PROMPT, 0), render(PROMPT, 0, flaw="wrong_color")
    w = WorldCritic()
    assert w.compare(PROMPT, good, bad).winner == "A" and w.compare(PROMPT, bad, good).winner == "B"
    assert w.compare(PROMPT, good, good).winner == "tie"
    assert np.isclose(w.compare(PROMPT, good, bad).p_a, 1.0)
