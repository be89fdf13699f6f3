"""Critics: one interface over the world judge, metric rewards and (later) VLM backends."""

from .base import Critic, Judgement, MetricCritic, WorldCritic, make_critic

__all__ = ["Critic", "Judgement", "MetricCritic", "WorldCritic", "make_critic"]
