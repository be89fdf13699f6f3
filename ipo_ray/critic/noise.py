"""Critic noise model: wrap any critic so its pairwise / pointwise accuracy is a chosen number.

IPO Table 3 / Table 6: a more accurate critic gives better post-training. To reproduce that on the world
(whose judge is exact), :class:`NoisyCritic` corrupts the wrapped critic's verdicts at rate
``1 - accuracy``:

- pairwise: each decisive verdict (one video better) is reversed with probability ``1 - accuracy``
  (ties stay ties), so the agreement with the wrapped critic on decisive pairs is ``accuracy``;
  ``judge_group`` ranks the group from the noisy verdicts of all its pairs (``protocols.rank_group``);
- pointwise (Good / Normal / Bad): the label is replaced, with probability ``1 - accuracy``, by one of
  the other two, uniformly; binary (Accept / Reject): desirability is flipped. A replaced label gets the
  middle score of its band (Good 0.9, Normal 0.65, Bad 0.25).

The noise is a deterministic function of ``seed``, the prompt and the videos' bytes (not of call order),
so a run reproduces with any number of critic actors, and a pair gets the same verdict in either order.
At ``accuracy=1`` the wrapper only adds the pairwise ranking to a score-based critic.
"""

from __future__ import annotations

import hashlib
import itertools

import numpy as np

from .base import Critic, Judgement, PairVerdict, score_verdict
from .protocols import pairwise_judgements

BAND_SCORE = {"Good": 0.9, "Normal": 0.65, "Bad": 0.25}
LABELS = ("Good", "Normal", "Bad")


def digest(video: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(video).tobytes(), digest_size=16).digest()


class NoisyCritic(Critic):
    def __init__(self, inner: Critic, accuracy: float, protocol: str = "pointwise", seed: int = 0):
        super().__init__()
        if not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"critic.noise_accuracy: must be in [0, 1] (got {accuracy})")
        self.inner, self.accuracy, self.protocol, self.seed = inner, float(accuracy), protocol, int(seed)
        self.name = inner.name if accuracy >= 1.0 else f"{inner.name}~acc{accuracy:g}"

    def summary(self) -> dict:
        """The wrapped critic's counts and rates, plus the noise added here (``noise_pairs``, ``noise_flips``)."""
        return {**self.inner.summary(), **self.stats}

    def _uniform(self, *keys: bytes) -> float:
        h = hashlib.blake2b(self.seed.to_bytes(8, "little", signed=True) + b"".join(keys), digest_size=8)
        return int.from_bytes(h.digest(), "little") / 2.0 ** 64

    # -- pointwise / binary --------------------------------------------------------------------------
    def _noisy_point(self, prompt: str, video: np.ndarray, j: Judgement) -> Judgement:
        if not j.valid or j.label not in LABELS:
            return j
        u = self._uniform(b"point", prompt.encode(), digest(video))
        if u >= 1.0 - self.accuracy:
            return j
        self.stats["noise_flips"] += 1
        if self.protocol == "binary":
            label = "Bad" if j.label in ("Good", "Normal") else "Good"
        else:  # one of the other two labels, uniformly (u / (1 - accuracy) is uniform in [0, 1))
            others = [x for x in LABELS if x != j.label]
            label = others[int(2 * u / (1.0 - self.accuracy)) % 2]
        return Judgement(BAND_SCORE[label], label, f"[noise: {j.label} -> {label}] {j.text}", j.valid)

    def judge_points(self, prompt, videos):
        inner = self.inner.judge_points(prompt, videos)
        return [self._noisy_point(prompt, v, j) for v, j in zip(videos, inner)]

    # -- pairwise ------------------------------------------------------------------------------------
    def _noisy_pair(self, prompt: str, da: bytes, db: bytes, v: PairVerdict) -> PairVerdict:
        self.stats["noise_pairs"] += 1
        if v.winner not in ("A", "B"):
            return v
        lo, hi = sorted((da, db))  # the same draw whichever order the pair comes in
        if self._uniform(b"pair", prompt.encode(), lo, hi) >= 1.0 - self.accuracy:
            return v
        self.stats["noise_flips"] += 1
        winner = "B" if v.winner == "A" else "A"
        return PairVerdict(winner, 1.0 - v.p_a, f"[noise: {v.winner} -> {winner}] {v.text}")

    def compare(self, prompt, video_a, video_b):
        return self._noisy_pair(prompt, digest(video_a), digest(video_b), self.inner.compare(prompt, video_a, video_b))

    def judge_group(self, prompt, videos):
        if self.protocol != "pairwise":
            return self.judge_points(prompt, videos)
        pairs = list(itertools.combinations(range(len(videos)), 2))
        ds = [digest(v) for v in videos]
        if hasattr(self.inner, "pair_verdicts"):  # a VLM's own position-swapped verdicts, then the noise
            verdicts = self.inner.pair_verdicts(prompt, videos, pairs)
            noisy = {(i, j): self._noisy_pair(prompt, ds[i], ds[j], verdicts[(i, j)]) for i, j in pairs}
            return pairwise_judgements(len(videos), noisy, self.inner.on_unparsable)
        base = self.inner.judge_group(prompt, videos)
        noisy = {(i, j): self._noisy_pair(prompt, ds[i], ds[j], score_verdict(base[i], base[j])) for i, j in pairs}
        out = pairwise_judgements(len(videos), noisy)
        for j, b in zip(out, base):  # keep the wrapped critic's own reason next to the ranking
            j.text = f"{j.text}; {self.inner.name}: {b.text}"
        return out


def label_accuracy(reference: list[str], predicted: list[str]) -> float:
    """Fraction of equal labels."""
    ref, pred = np.asarray(reference), np.asarray(predicted)
    return float((ref == pred).mean()) if ref.size else float("nan")

