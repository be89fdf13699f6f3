"""The critic interface every backend implements.

A critic scores the K videos of one prompt (a group). Each judgement carries a score in [0, 1], a
three-level label (Good / Normal / Bad, the IPO pointwise protocol; Good+Normal = desirable), the
critic's raw text or reason, ``valid`` (False when a backend could not parse its own answer:
such samples are dropped or abstained, never crash a run) and ``role``: a pairwise critic marks the
group's preference pair it stands behind (``chosen`` / ``rejected``, empty otherwise), which
``ipo_ray.rows`` uses for the DPO pair instead of best-vs-worst by score.

Besides ``judge_group`` (what the loop calls), every critic answers ``judge_points`` (one label per
video: the pointwise / binary question) and ``compare`` (which of two videos is better), which the
critic evaluation (``jobs/eval_critic.py``) and the noise model use. ``stats`` counts what happened
(unparsable answers, consistent / inconsistent pairwise verdicts, ties); ``summary()`` adds rates.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
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
    role: str = ""  # "chosen" / "rejected": the pair a pairwise critic prefers within the group


@dataclass
class PairVerdict:
    """Which of two videos is better: ``winner`` is "A", "B", "tie", or None (no usable verdict: the two
    position-swapped answers disagreed, or an answer was unparsable); ``p_a`` = P(A is better)."""

    winner: str | None
    p_a: float = 0.5
    text: str = ""
    parsed: bool = True  # False when an answer could not be parsed (as opposed to disagreeing)


def label_for(score: float, good: float = 0.8, normal: float = 0.5) -> str:
    return "Good" if score >= good else "Normal" if score >= normal else "Bad"


def exc_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when the message is empty), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def score_verdict(a: "Judgement", b: "Judgement") -> PairVerdict:
    """The pairwise verdict two scored judgements imply (equal scores tie; an unusable one: no verdict)."""
    if not (a.valid and b.valid):
        return PairVerdict(None, 0.5, "unparsable", parsed=False)
    winner = "tie" if abs(a.score - b.score) < 1e-9 else "A" if a.score > b.score else "B"
    return PairVerdict(winner, {"A": 1.0, "B": 0.0, "tie": 0.5}[winner], f"{a.score:.4f} vs {b.score:.4f}")


class Critic(ABC):
    name = "critic"
    protocol = "score"

    def __init__(self):
        self.stats: Counter = Counter()

    @abstractmethod
    def judge_group(self, prompt: str, videos: list[np.ndarray]) -> list[Judgement]:
        """Judge the videos generated for one prompt."""

    def judge_points(self, prompt: str, videos: list[np.ndarray]) -> list[Judgement]:
        """One label per video (pointwise / binary question); score-based critics: their scores."""
        return self.judge_group(prompt, videos)

    def compare(self, prompt: str, video_a: np.ndarray, video_b: np.ndarray) -> PairVerdict:
        """Which video is better; score-based critics compare their scores."""
        return score_verdict(*self.judge_points(prompt, [video_a, video_b]))

    def summary(self) -> dict:
        """Counts plus rates: consistency of position-swapped pairwise verdicts, ties, unparsable answers."""
        s = dict(self.stats)
        decided = s.get("consistent", 0) + s.get("inconsistent", 0)
        if decided:
            s["consistency_rate"] = s.get("consistent", 0) / decided
        if s.get("consistent"):
            s["tie_rate"] = s.get("ties", 0) / s["consistent"]
        if s.get("answers"):
            s["unparsable_rate"] = s.get("unparsable", 0) / s["answers"]
        return s


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
        super().__init__()
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
    """Build the critic named by ``CriticConfig``: the backend, its protocol, and the noise model.

    Score-based backends (world, flow, flicker, clip) with ``protocol: pairwise`` rank each group from
    their scores pair by pair (the noise model at accuracy 1 unless ``noise_accuracy`` is set), so the
    pairwise path of the loop can be run without a VLM.
    """
    if cfg.backend == "world":
        critic: Critic = WorldCritic()
    elif cfg.backend in ("flow", "flicker"):
        critic = MetricCritic(cfg.backend)
    elif cfg.backend == "clip":
        from .clip import ClipCritic

        critic = ClipCritic.from_pretrained(cfg.model, num_frames=cfg.num_frames or 8, revision=cfg.revision)
    elif cfg.backend in ("transformers", "vllm"):
        from .protocols import VLMCritic
        from .vlm import make_engine

        critic = VLMCritic(make_engine(cfg), cfg.protocol, num_frames=cfg.num_frames, dimension=cfg.dimension,
                           prompt_version=cfg.prompt_version, on_unparsable=cfg.on_unparsable,
                           max_frame_pixels=cfg.max_frame_pixels, name=f"{cfg.backend}:{cfg.model}")
    else:  # pragma: no cover - the config's Literal forbids it
        raise ValueError(f"critic.backend: unknown {cfg.backend!r}; allowed: world, flow, flicker, clip, transformers, vllm")
    score_based = cfg.backend not in ("transformers", "vllm")
    if cfg.noise_accuracy is not None or (score_based and cfg.protocol == "pairwise"):
        from .noise import NoisyCritic

        critic = NoisyCritic(critic, accuracy=cfg.noise_accuracy or 1.0, protocol=cfg.protocol, seed=cfg.noise_seed)
    return critic
