"""The verifiable world: prompts, a renderer of correct videos and a judge that knows the truth."""

from .grammar import COLORS, MOTIONS, SHAPES, Scene, parse_prompt, splits, vocabulary
from .judge import ACCEPT, judge, judge_details, reason
from .render import FLAWS, render

__all__ = ["ACCEPT", "COLORS", "FLAWS", "MOTIONS", "SHAPES", "Scene", "judge", "judge_details",
           "parse_prompt", "reason", "render", "splits", "vocabulary"]
