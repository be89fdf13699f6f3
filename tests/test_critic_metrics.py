"""Metric rewards on rendered world videos, and the CLIP score through transformers' CLIP classes."""

import numpy as np
import pytest
import torch

from ipo_ray.config import CriticConfig
from ipo_ray.critic import MetricCritic, make_critic
from ipo_ray.world import render

MOVING = ["a red square moves from left to right", "a blue circle falls down", "a green square rises up"]


def test_flow_reward_larger_for_moving_than_for_frozen_videos():
    critic = make_critic(CriticConfig(backend="flow"))
    for prompt in MOVING:
        moving = [render(prompt, s) for s in range(2)]
        frozen = [render(prompt, s, flaw="frozen") for s in range(2)]
        js = critic.judge_group(prompt, moving + frozen)
        assert min(j.score for j in js[:2]) > max(j.score for j in js[2:]), prompt
        assert all(j.score < 0.01 and j.text.startswith("flow=") for j in js[2:])  # (almost) no motion
        assert all(0.0 <= j.score <= 1.0 for j in js)


def test_flicker_reward_lower_for_noisy_than_smooth_videos():
    critic = MetricCritic("flicker")
    rng = np.random.default_rng(0)
    for prompt in MOVING:
        smooth = render(prompt, 0)
        noise = rng.integers(-60, 61, smooth.shape)
        noisy = np.clip(smooth.astype(int) + noise, 0, 255).astype(np.uint8)
        s_smooth, s_noisy = (j.score for j in critic.judge_group(prompt, [smooth, noisy]))
        assert s_noisy < s_smooth - 0.05, prompt
        assert 0.0 <= s_noisy <= 1.0 and 0.0 <= s_smooth <= 1.0


def test_clip_score_through_a_tiny_random_clip(tmp_path):
    from transformers import CLIPModel, CLIPProcessor

    from ipo_ray.critic.clip import ClipCritic
    from ipo_ray.critic.tiny import build_tiny_clip

    torch.set_num_threads(1)
    path = build_tiny_clip(tmp_path / "tiny-clip")
    critic = make_critic(CriticConfig(backend="clip", model=str(path), num_frames=4))
    assert isinstance(critic, ClipCritic) and isinstance(critic.model, CLIPModel)
    assert isinstance(critic.processor, CLIPProcessor)
    videos = [render(MOVING[0], 0), render(MOVING[0], 1, flaw="wrong_color")]
    js = critic.judge_group(MOVING[0], videos)
    again = critic.judge_group(MOVING[0], videos)
    cos = critic.cosines(MOVING[0], videos)
    assert [j.score for j in js] == [j.score for j in again]  # deterministic
    for j, c in zip(js, cos):
        assert 0.0 <= j.score <= 1.0 and -1.0 <= c <= 1.0 and j.score == pytest.approx(min(1.0, max(0.0, 2.5 * c)))
    assert critic.cosines(MOVING[1], videos) != cos  # the prompt reaches the text tower
