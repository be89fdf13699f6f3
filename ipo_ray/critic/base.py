"""The critic interface every backend implements.

A critic scores the K videos of one prompt (a group). Each judgement carries a score in [0, 1], a
three-level label (Good / Normal / Bad, the IPO pointwise protocol; Good+Normal = desirable), the
critic's raw text or reason, and ``valid`` (False when a backend could not parse its own answer:
such samples are dropped or abstained, never crash a run).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from ..metrics import dynamic_degree, temporal_flicker
from ..world import judge_details, reason


@dataclass
class Judgement:
    score: float
    label: str
    text: str = ""
    valid: bool = True


def label_for(score: float, good: float = 0.8, normal: float = 0.5) -> str:
    return "Good" if score >= good else "Normal" if score >= normal else "Bad"


class Critic(ABC):
    name = "critic"

    @abstractmethod
    def judge_group(self, prompt: str, videos: list[np.ndarray]) -> list[Judgement]:
        """Judge the videos generated for one prompt."""


class WorldCritic(Critic):
    """The verifiable world's programmatic judge (ground truth)."""

    name = "world"

    def judge_group(self, prompt, videos):
        out = []
        for v in videos:
            d = judge_details(v, prompt)
            out.append(Judgement(d["score"], label_for(d["score"]), reason(d)))
        return out


class MetricCritic(Critic):
    """Metric rewards (Furuta et al. §4.2): optical-flow dynamic degree or temporal flicker.

    ``flow``: ``min(1, dynamic_degree / flow_scale)`` (more motion = higher reward);
    ``flicker``: the VBench temporal-flicker score (steadier = higher reward).
    """

    def __init__(self, metric: str, flow_scale: float = 2.0):
        if metric not in ("flow", "flicker"):
            raise ValueError(f"critic.backend: unknown metric {metric!r}; allowed: flow, flicker")
        self.name, self.metric, self.flow_scale = metric, metric, flow_scale

    def judge_group(self, prompt, videos):
        out = []
        for v in videos:
            if self.metric == "flow":
                raw = dynamic_degree(v)
                s = float(min(1.0, raw / self.flow_scale))
            else:
                raw = s = temporal_flicker(v)
            out.append(Judgement(s, label_for(s), f"{self.metric}={raw:.4f}"))
        return out


def make_critic(cfg) -> Critic:
    """Build the critic named by ``CriticConfig.backend`` (VLM backends come from ipo_ray.critic.vlm)."""
    if cfg.backend == "world":
        critic: Critic = WorldCritic()
    elif cfg.backend in ("flow", "flicker"):
        critic = MetricCritic(cfg.backend)
    else:
        raise ValueError(f"critic.backend: {cfg.backend!r} is not available in this build; "
                         "allowed here: world, flow, flicker")
    return critic
