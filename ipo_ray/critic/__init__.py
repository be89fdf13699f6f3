"""Critics: one interface over the world judge, metric rewards, CLIP and VLMs (transformers, vLLM).

``make_critic(cfg.critic)`` builds one; see docs/CRITICS.md. Prompts: ``prompts``; protocols: ``protocols``;
engines: ``vlm``; noise model: ``noise``; accuracy against labels: ``evaluation``.
"""

from .base import Critic, Judgement, MetricCritic, PairVerdict, WorldCritic, label_for, make_critic

__all__ = ["Critic", "Judgement", "MetricCritic", "PairVerdict", "WorldCritic", "label_for", "make_critic"]
