"""The critic noise model hits its target accuracy (2,000 judgements each) and is deterministic."""

import numpy as np
import pytest

from ipo_ray.critic import MetricCritic
from ipo_ray.critic.noise import NoisyCritic, label_accuracy

N = 2000
TOL = 0.03  # ~3.4 standard errors of an accuracy of 0.8 over 2,000 judgements


@pytest.fixture(scope="module")
def clips():
    """2,000 distinct small clips with a spread of flicker scores (the cheapest exact critic)."""
    rng = np.random.default_rng(0)
    amp = rng.integers(0, 250, (N, 1, 1, 1, 1))
    blink = np.array([0, 1, 0, 1]).reshape(1, 4, 1, 1, 1)  # frames alternate: flicker ~ 1 - amp / 255
    return list((rng.integers(0, 6, (N, 4, 4, 4, 3)) + amp * blink).astype(np.uint8))


@pytest.mark.parametrize("accuracy", [0.7, 0.9])
def test_pointwise_accuracy_is_the_target(clips, accuracy):
    inner = MetricCritic("flicker")
    truth = [j.label for j in inner.judge_points("p", clips)]
    assert len(set(truth)) == 3  # all three labels occur
    noisy = NoisyCritic(inner, accuracy, protocol="pointwise", seed=1)
    got = noisy.judge_points("p", clips)
    assert label_accuracy(truth, [j.label for j in got]) == pytest.approx(accuracy, abs=TOL)
    flipped = [j for j, t in zip(got, truth) if j.label != t]
    assert all(j.text.startswith("[noise:") and j.score in (0.9, 0.65, 0.25) for j in flipped)
    assert len({(t, j.label) for j, t in zip(got, truth) if j.label != t}) == 6  # every wrong label occurs
    binary = NoisyCritic(inner, accuracy, protocol="binary", seed=1).judge_points("p", clips)
    desirable = [t in ("Good", "Normal") for t in truth]
    agree = np.mean([(j.label in ("Good", "Normal")) == d for j, d in zip(binary, desirable)])
    assert agree == pytest.approx(accuracy, abs=TOL)


@pytest.mark.parametrize("accuracy", [0.6, 0.8])
def test_pairwise_accuracy_is_the_target(clips, accuracy):
    inner = MetricCritic("flicker")
    noisy = NoisyCritic(inner, accuracy, protocol="pairwise", seed=3)
    pairs = [(clips[i], clips[(i + 1) % N]) for i in range(N)]
    truth = [inner.compare("p", a, b).winner for a, b in pairs]
    got = [noisy.compare("p", a, b).winner for a, b in pairs]
    decisive = [(t, g) for t, g in zip(truth, got) if t != "tie"]
    assert len(decisive) > 0.95 * N
    assert np.mean([t == g for t, g in decisive]) == pytest.approx(accuracy, abs=TOL)
    # the same pair in the other order gets the mirrored verdict (one draw per pair)
    swapped = [noisy.compare("p", b, a).winner for a, b in pairs[:200]]
    assert all({"A": "B", "B": "A", "tie": "tie"}[g] == s for g, s in zip(got[:200], swapped))


def test_group_ranking_with_noise_and_determinism(clips):
    inner = MetricCritic("flicker")
    groups = [clips[i:i + 8] for i in range(0, 400, 8)]
    exact = NoisyCritic(inner, 1.0, protocol="pairwise")
    for g in groups[:10]:
        scores = [j.score for j in inner.judge_group("p", g)]
        js = exact.judge_group("p", g)
        roles = {j.role: k for k, j in enumerate(js) if j.role}
        assert scores[roles["chosen"]] == max(scores) and scores[roles["rejected"]] == min(scores)
    a = NoisyCritic(inner, 0.7, protocol="pairwise", seed=5)
    b = NoisyCritic(inner, 0.7, protocol="pairwise", seed=5)
    c = NoisyCritic(inner, 0.7, protocol="pairwise", seed=6)
    ra = [[(j.score, j.role) for j in a.judge_group("p", g)] for g in groups]
    rb = [[(j.score, j.role) for j in b.judge_group("p", g)] for g in groups]
    rr = [[j.score for j in b.judge_group("p", g[::-1])][::-1] for g in groups]  # call order does not matter
    rc = [[(j.score, j.role) for j in c.judge_group("p", g)] for g in groups]
    assert ra == rb and rr == [[s for s, _ in r] for r in ra] and ra != rc
    assert a.stats["noise_pairs"] == 28 * len(groups) and 0 < a.stats["noise_flips"] < a.stats["noise_pairs"]
    with pytest.raises(ValueError, match=r"critic\.noise_accuracy"):
        NoisyCritic(inner, 1.5)
