"""CLIP score as a metric reward (Furuta et al. §4.2; Hessel et al.'s CLIPScore), via transformers' CLIP classes.

Per video: ``num_frames`` frames sampled uniformly (all of a shorter clip), each embedded with ``CLIPModel.get_image_features``;
the prompt with ``get_text_features``; the reward is ``clamp(w · mean_frames cos(frame, prompt), 0, 1)``
with CLIPScore's ``w = 2.5``.
"""

from __future__ import annotations

import numpy as np

from .base import Critic, Judgement, exc_line, label_for
from .prompts import sample_frames


class ClipCritic(Critic):
    def __init__(self, model, processor, num_frames: int = 8, weight: float = 2.5, name: str = "clip"):
        super().__init__()
        self.model, self.processor = model.eval(), processor
        self.num_frames, self.weight, self.name = num_frames, weight, name
        self.device = next(model.parameters()).device

    @classmethod
    def from_pretrained(cls, path: str, num_frames: int = 8, revision: str | None = None) -> "ClipCritic":
        import torch
        from transformers import CLIPModel, CLIPProcessor

        try:
            model = CLIPModel.from_pretrained(path, revision=revision)
            processor = CLIPProcessor.from_pretrained(path, revision=revision)
        except (OSError, ValueError) as exc:
            raise ValueError(f"critic.model: cannot load {path!r} as a CLIP model: {exc_line(exc)}") from None
        return cls(model.to("cuda" if torch.cuda.is_available() else "cpu"), processor, num_frames, name=f"clip:{path}")

    def cosines(self, prompt: str, videos: list[np.ndarray]) -> list[float]:
        import torch

        counts = [min(self.num_frames, len(v)) for v in videos]  # a mean over frames needs no padding
        frames = [f for v, n in zip(videos, counts) for f in sample_frames(v, n)]
        max_len = getattr(self.model.config.text_config, "max_position_embeddings", 77)
        text = self.processor(text=[prompt], return_tensors="pt", padding=True, truncation=True, max_length=max_len)
        images = self.processor(images=frames, return_tensors="pt")
        with torch.inference_mode():
            t = self.model.get_text_features(**{k: v.to(self.device) for k, v in text.items()})
            i = self.model.get_image_features(pixel_values=images["pixel_values"].to(self.device))
        t, i = _features(t), _features(i)
        cos = torch.nn.functional.cosine_similarity(i.float(), t.float(), dim=-1)
        return [float(c.mean()) for c in torch.split(cos.cpu(), counts)]

    def judge_group(self, prompt, videos):
        out = []
        for c in self.cosines(prompt, videos):
            s = float(min(1.0, max(0.0, self.weight * c)))
            out.append(Judgement(s, label_for(s), f"clip_cos={c:.4f}"))
        return out


def _features(x):
    """``get_*_features`` returns a tensor, or (in some transformers versions) an output with ``pooler_output``."""
    return x if hasattr(x, "dim") else getattr(x, "pooler_output", x[0])
