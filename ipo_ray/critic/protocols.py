"""The papers' critic protocols on top of any VLM engine (``ipo_ray.critic.vlm``).

- **pointwise** (IPO): Good / Normal / Bad per video; score = E[value] under the verdict probabilities
  (Good 1, Normal 0.5, Bad 0); Good and Normal are desirable.
- **binary** (Furuta et al.): Accept / Reject; score = P(Accept) / (P(Accept) + P(Reject)).
- **pairwise** (IPO §4.3): every pair of the group is asked twice, (A, B) and (B, A); only verdicts that
  agree across the swap count. Each video's score is its mean probability of beating the others over its
  consistent comparisons (0.5 for a tie); the group's preference pair is the widest-apart pair whose own
  comparison was a consistent win (IPO's selective sampling: best vs worst).

Probabilities come from the first answer token's log-probabilities when the engine exposes them; the
verdict the model wrote decides the label, validity and consistency, and the probabilities refine the
score when they agree with it (their argmax is the written verdict). An unparsable answer is counted in ``stats`` and, by
``critic.on_unparsable``, dropped (the judgement is ``valid=False``; a pairwise comparison gives no
verdict) or abstained (the neutral verdict: Normal with score 0.5, or a tie).
"""

from __future__ import annotations

import itertools

import numpy as np

from ..config import frames_for
from .base import Critic, Judgement, PairVerdict, label_for
from .prompts import PARSERS, POINT_VALUES, class_probs, fit_frames, get_template, point_score, render, sample_frames
from .vlm import Engine, Request

ABSTAINED = "[abstained: unparsable] "


def swap_verdict(first: str, second: str) -> str | None:
    """Combine the answers to (A=i, B=j) and to the swapped (A=j, B=i): "A" (i better in both), "B" (j
    better in both), "tie" (both ties), or None (inconsistent)."""
    if first == "A" and second == "B":
        return "A"
    if first == "B" and second == "A":
        return "B"
    if first == second == "tie":
        return "tie"
    return None


def rank_group(n: int, verdicts: dict[tuple[int, int], PairVerdict]) -> tuple[list[float], list[int], tuple[int, int] | None]:
    """Scores, counts of consistent comparisons per video, and the preference pair (chosen, rejected).

    ``verdicts[(i, j)]`` (i < j) has ``winner`` "A" when i is better, "B" when j is, "tie", or None.
    """
    won, seen = np.zeros(n), np.zeros(n, int)
    for (i, j), v in verdicts.items():
        if v.winner is None:
            continue
        won[i] += v.p_a
        won[j] += 1.0 - v.p_a
        seen[i] += 1
        seen[j] += 1
    scores = [float(won[k] / seen[k]) if seen[k] else 0.5 for k in range(n)]
    pair = None
    candidates = sorted(itertools.combinations(range(n), 2), key=lambda p: -abs(scores[p[0]] - scores[p[1]]))
    for i, j in candidates:
        v = verdicts.get((i, j))
        if v is not None and v.winner in ("A", "B"):
            pair = (i, j) if v.winner == "A" else (j, i)
            break
    return scores, seen.tolist(), pair


class VLMCritic(Critic):
    """A VLM asked the papers' questions; one class for every engine (transformers, vLLM)."""

    def __init__(self, engine: Engine, protocol: str, num_frames: int | None = None, dimension: str = "overall",
                 prompt_version: str = "v1", on_unparsable: str = "drop", max_frame_pixels: int = 224 * 224,
                 name: str | None = None):
        super().__init__()
        if protocol not in ("pairwise", "pointwise", "binary"):
            raise ValueError(f"critic.protocol: a VLM critic needs pairwise, pointwise or binary (got {protocol!r})")
        if on_unparsable not in ("drop", "abstain"):
            raise ValueError(f"critic.on_unparsable: unknown {on_unparsable!r}; allowed: drop, abstain")
        self.engine, self.protocol, self.dimension = engine, protocol, dimension
        self.num_frames, self.prompt_version = num_frames, prompt_version
        self.on_unparsable, self.max_frame_pixels = on_unparsable, max_frame_pixels
        self.name = name or f"vlm:{protocol}"
        self.point_protocol = "binary" if protocol == "binary" else "pointwise"
        for p in ("pairwise", self.point_protocol):
            get_template(p, prompt_version)  # fail at construction on a missing template

    # -- asking --------------------------------------------------------------------------------------
    def _frames(self, protocol: str, video: np.ndarray) -> np.ndarray:
        n = frames_for(protocol, self.num_frames)
        return fit_frames(sample_frames(video, n), self.max_frame_pixels)

    def _ask(self, protocol: str, prompt: str, video_sets: list[tuple[np.ndarray, ...]]):
        """Ask ``protocol``'s question once per video set; returns (parsed verdict, probs, raw text) each."""
        t = get_template(protocol, self.prompt_version)
        n = frames_for(protocol, self.num_frames)
        parts = render(t, prompt, n, self.dimension)
        cache: dict[int, np.ndarray] = {}

        def frames(v):
            if id(v) not in cache:
                cache[id(v)] = self._frames(protocol, v)
            return cache[id(v)]

        requests = [Request(parts, [frames(v) for v in vs]) for vs in video_sets]
        replies = self.engine.generate(requests, max_new_tokens=self.engine.max_new_tokens_for(protocol))
        ids = self.engine.answer_ids(t.answers)
        out = []
        for r in replies:
            verdict = PARSERS[protocol](r.text)
            probs = class_probs(r.logprobs, ids)
            self.stats["answers"] += 1
            if verdict is None:
                self.stats["unparsable"] += 1
                self.stats["abstained" if self.on_unparsable == "abstain" else "dropped"] += 1
            else:
                if probs is not None and max(probs, key=probs.get) != verdict:
                    self.stats["logprob_disagreements"] += 1  # the written verdict wins; its value is the score
                    probs = None
                self.stats["logprob_scores" if probs else "text_scores"] += 1
            out.append((verdict, probs, r.text))
        return out

    # -- pointwise / binary --------------------------------------------------------------------------
    def judge_points(self, prompt, videos):
        """Label = the verdict the model wrote (binary: Accept -> Good, Reject -> Bad); score = its expected
        value under the verdict probabilities when the engine gives them, else the verdict's value."""
        out = []
        for verdict, probs, text in self._ask(self.point_protocol, prompt, [(v,) for v in videos]):
            if verdict is None:
                if self.on_unparsable == "abstain":
                    out.append(Judgement(0.5, "Normal", ABSTAINED + text))
                else:
                    out.append(Judgement(0.5, "", text, valid=False))
                continue
            score = point_score(probs) if probs else POINT_VALUES[verdict]
            out.append(Judgement(score, {"Accept": "Good", "Reject": "Bad"}.get(verdict, verdict), text))
        self.stats["judgements"] += len(out)
        return out

    # -- pairwise ------------------------------------------------------------------------------------
    def pair_verdicts(self, prompt: str, videos: list[np.ndarray], pairs: list[tuple[int, int]]) -> dict:
        sets = []
        for i, j in pairs:
            sets += [(videos[i], videos[j]), (videos[j], videos[i])]
        answers = self._ask("pairwise", prompt, sets)
        verdicts = {}
        for k, (i, j) in enumerate(pairs):
            (v1, p1, t1), (v2, p2, t2) = answers[2 * k], answers[2 * k + 1]
            self.stats["pairs"] += 1
            text = f"[A,B]: {t1.strip()} | [B,A]: {t2.strip()}"
            if v1 is None or v2 is None:
                if self.on_unparsable == "abstain":  # the neutral verdict, kept out of the consistency stats
                    self.stats["abstained_pairs"] += 1
                    verdicts[(i, j)] = PairVerdict("tie", 0.5, ABSTAINED + text)
                else:
                    verdicts[(i, j)] = PairVerdict(None, 0.5, text, parsed=False)
                continue
            winner = swap_verdict(v1, v2)
            if winner is None:
                self.stats["inconsistent"] += 1
                verdicts[(i, j)] = PairVerdict(None, 0.5, text)
                continue
            self.stats["consistent"] += 1
            self.stats["ties"] += winner == "tie"
            p_a = {"A": 1.0, "B": 0.0, "tie": 0.5}[winner]
            if p1 and p2 and winner != "tie":  # P(i better): as A in the first answer, as B in the swapped one
                p_a = 0.5 * ((p1["A"] + 0.5 * p1["tie"]) + (p2["B"] + 0.5 * p2["tie"]))
            verdicts[(i, j)] = PairVerdict(winner, float(p_a), text)
        return verdicts

    def compare(self, prompt, video_a, video_b):
        return self.pair_verdicts(prompt, [video_a, video_b], [(0, 1)])[(0, 1)]

    def judge_group(self, prompt, videos):
        if self.protocol != "pairwise":
            return self.judge_points(prompt, videos)
        n = len(videos)
        verdicts = self.pair_verdicts(prompt, videos, list(itertools.combinations(range(n), 2)))
        return pairwise_judgements(n, verdicts, self.on_unparsable)


def pairwise_judgements(n: int, verdicts: dict[tuple[int, int], PairVerdict], on_unparsable: str = "drop") -> list[Judgement]:
    """Judgements of a group from its pairwise verdicts (scores, labels by score, the preference pair)."""
    scores, seen, pair = rank_group(n, verdicts)
    out = []
    for k in range(n):
        mine = [v for (i, j), v in verdicts.items() if k in (i, j)]
        # Drop mode: a video is signal only if some comparison of it was parsed and swap-consistent.
        usable = on_unparsable == "abstain" or not mine or seen[k] > 0
        text = f"pairwise: score {scores[k]:.3f} over {seen[k]} consistent comparisons of {len(mine)}"
        out.append(Judgement(scores[k], label_for(round(scores[k], 6)), text, valid=usable))
    if pair is not None:
        out[pair[0]].role, out[pair[1]].role = "chosen", "rejected"
    return out
