"""Critic prompts, frame sampling and answer parsing: every template the VLM critics use, in one place.

Templates are versioned (``critic.prompt_version``); a run records the version it used, and a changed
wording gets a new version rather than silently replacing an old one. The wording is ours, written from
the papers' criteria:

- ``pairwise`` (IPO §4.1: two videos of one prompt, a question, an evaluation dimension; the answer is
  which video is better, then a reason),
- ``pointwise`` (IPO §4.1/§4.3: Good / Normal / Bad, then a reason; dimensions text-video consistency,
  video fidelity, motion smoothness),
- ``binary`` (Furuta et al., Appendix B: coherence across frames, physical accuracy, task completion,
  inconsistencies with the first frame; a single word, Accept or Reject).

Every template asks for the verdict as the *first* word of the reply, so a backend that exposes
log-probabilities can read the verdict's probability from the first generated token
(:func:`answer_token_ids`, :func:`class_probs`). Parsers never raise: unparsable text gives ``None``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

DIMENSIONS = {
    "consistency": "text-video consistency: the objects, attributes, counts and actions that the prompt "
                   "describes are all shown, and nothing contradicts it",
    "fidelity": "video fidelity: the frames look clean and natural, without distortion, blur, broken shapes "
                "or visual artifacts",
    "smoothness": "motion smoothness: movement is continuous and physically plausible, without jitter, "
                  "flicker, sudden jumps or frozen stretches",
}
DIMENSIONS["overall"] = ("overall quality, judged on three aspects together: " + "; ".join(
    DIMENSIONS[k] for k in ("consistency", "fidelity", "smoothness")))


@dataclass(frozen=True)
class Template:
    """One prompt: ``text`` has ``{prompt}``, ``{dimension}``, ``{num_frames}`` and video slots
    (``{video}`` or ``{video_a}``/``{video_b}``); ``answers`` maps each verdict to the words that say it."""

    protocol: str
    version: str
    text: str
    answers: dict[str, tuple[str, ...]] = field(default_factory=dict)


_PAIRWISE_V1 = """You are a critic of generated videos. Two videos were generated from the same text prompt. \
Each one is shown as {num_frames} frames sampled uniformly in time, in order.

Question: which video better realises the prompt "{prompt}"?
Evaluation dimension: {dimension}.

Video A: {video_a}
Video B: {video_b}

Begin your reply with exactly one word: A if video A is better, B if video B is better, or Tie if neither \
is better. Then, on a new line starting with "Reason:", name the problems you saw in each video (or say \
there were none) and why they decide the ranking."""

_POINTWISE_V1 = """You are a critic of generated videos. The video below was generated from a text prompt \
and is shown as {num_frames} frames sampled uniformly in time, in order.

Question: how well does the video realise the prompt "{prompt}"?
Evaluation dimension: {dimension}.

Video: {video}

Rate the video on this dimension. Begin your reply with exactly one word: Good (no noticeable problem), \
Normal (small problems) or Bad (clear failures). Then, on a new line starting with "Reason:", justify the \
rating in one or two sentences."""

_BINARY_V1 = """You review generated videos. A video is shown as {num_frames} consecutive frames. Accept \
it only if it carries out the task in the text prompt as one consistent video without glitches.

Inputs: the text prompt, which states the task, and the frames, which are consecutive moments of the video.

Go through the frames in order and check:
1. Coherence: the frames form one continuous scene and each follows smoothly and logically from the one before.
2. Physical accuracy: every frame obeys physics; nothing moves, jumps or is placed in an impossible way.
3. Task completion: together, the frames accomplish what the text prompt asks for.
4. Inconsistencies: no object moves, appears, disappears or overlaps in a way that contradicts the fixed \
scene shown in the first frame.

Accept a coherent video that completes the task. Reject it if any frame breaks these criteria or the task \
is not achieved, even for a small error, but do not be overly strict.

Answer with a single word, Accept or Reject, and give no reasoning.

Text prompt: {prompt}

Video: {video}"""

TEMPLATES: dict[tuple[str, str], Template] = {
    ("pairwise", "v1"): Template("pairwise", "v1", _PAIRWISE_V1, {"A": ("A",), "B": ("B",), "tie": ("Tie",)}),
    ("pointwise", "v1"): Template("pointwise", "v1", _POINTWISE_V1,
                                  {"Good": ("Good",), "Normal": ("Normal", "Average"), "Bad": ("Bad", "Poor")}),
    ("binary", "v1"): Template("binary", "v1", _BINARY_V1, {"Accept": ("Accept",), "Reject": ("Reject",)}),
}
PROMPT_VERSIONS = sorted({v for _, v in TEMPLATES})

# Scores of the verdicts (pointwise: the expectation over Good / Normal / Bad; binary: P(Accept)).
POINT_VALUES = {"Good": 1.0, "Normal": 0.5, "Bad": 0.0, "Accept": 1.0, "Reject": 0.0}


def get_template(protocol: str, version: str = "v1") -> Template:
    try:
        return TEMPLATES[(protocol, version)]
    except KeyError:
        raise ValueError(f"critic.prompt_version: no {protocol!r} template of version {version!r}; "
                         f"allowed: {PROMPT_VERSIONS}") from None


_SLOT = re.compile(r"\x00(video|video_a|video_b)\x00")


def render(template: Template, prompt: str, num_frames: int, dimension: str = "overall") -> list[str | int]:
    """The filled template as parts: strings are text, integers are video slots (0 = the video or video A)."""
    if dimension not in DIMENSIONS:
        raise ValueError(f"critic.dimension: unknown {dimension!r}; allowed: {sorted(DIMENSIONS)}")
    text = template.text.format(prompt=prompt, dimension=DIMENSIONS[dimension], num_frames=num_frames,
                                video="\x00video\x00", video_a="\x00video_a\x00", video_b="\x00video_b\x00")
    parts: list[str | int] = []
    for i, piece in enumerate(_SLOT.split(text)):
        if i % 2:
            parts.append(1 if piece == "video_b" else 0)
        elif piece:
            parts.append(piece)
    return parts


def sample_frames(video: np.ndarray, num_frames: int) -> np.ndarray:
    """``num_frames`` frames spread uniformly over the clip, first and last included; a clip with fewer
    frames is padded by repeating its last frame (never cropped)."""
    v = np.asarray(video)
    if v.ndim != 4 or v.shape[-1] != 3 or v.shape[0] < 1:
        raise ValueError(f"video: expected uint8 [F, H, W, 3] with F >= 1, got shape {tuple(v.shape)}")
    f = v.shape[0]
    if f >= num_frames:
        idx = np.linspace(0, f - 1, num_frames).round().astype(int)
    else:
        idx = np.concatenate([np.arange(f), np.full(num_frames - f, f - 1)])
    return np.ascontiguousarray(v[idx]).astype(np.uint8, copy=False)


def fit_frames(frames: np.ndarray, max_pixels: int) -> np.ndarray:
    """Downscale frames larger than ``max_pixels`` (H×W), keeping the aspect ratio; nothing is cropped."""
    f, h, w, _ = frames.shape
    if h * w <= max_pixels:
        return frames
    import cv2

    s = math.sqrt(max_pixels / (h * w))
    nh, nw = max(1, int(h * s)), max(1, int(w * s))
    return np.stack([cv2.resize(x, (nw, nh), interpolation=cv2.INTER_AREA) for x in frames])


# --- parsing -------------------------------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z]+")


def _first_word(text: str) -> str:
    m = _WORD.search(text)
    return m.group(0) if m else ""


def parse_binary(text) -> str | None:
    """``Accept`` / ``Reject`` from a reply; ``None`` if absent or both appear with neither first."""
    try:
        first = _first_word(text).lower()
        if first.startswith("accept"):
            return "Accept"
        if first.startswith("reject"):
            return "Reject"
        found = {w for w in re.findall(r"\b(accept|reject)(?:ed|s)?\b", text.lower())}
        return found.pop().capitalize() if len(found) == 1 else None
    except Exception:  # noqa: BLE001 - a parser never raises
        return None


_POINT_WORDS = {"good": "Good", "normal": "Normal", "average": "Normal", "bad": "Bad", "poor": "Bad"}


def parse_pointwise(text) -> str | None:
    """``Good`` / ``Normal`` / ``Bad`` (also *average*, *poor*): the first word, else a ``Rating: X`` /
    ``Answer: X`` line, else ``None``."""
    try:
        first = _first_word(text).lower()
        if first in _POINT_WORDS:
            return _POINT_WORDS[first]
        m = re.search(r"\b(?:answer|rating|score|label|verdict)\s*[:=]\s*\**\s*(good|normal|average|bad|poor)\b",
                      text, re.IGNORECASE)
        return _POINT_WORDS[m.group(1).lower()] if m else None
    except Exception:  # noqa: BLE001
        return None


def parse_pairwise(text) -> str | None:
    """``A`` / ``B`` / ``tie``: the first word (``A``, ``B``, ``Tie``, also ``Video A``, ``Answer: B``), else
    an explicit ``Video A is better`` statement, else ``None``. A lowercase article "a" is not a verdict."""
    try:
        head = re.match(r"\s*[\*\"'(\[]*\s*(?:(?:final\s+)?answer\s*[:\-]\s*)?(?:video\s+)?([A-Za-z]+)\b",
                        text, re.IGNORECASE)
        if head:
            w = head.group(1)
            if w in ("A", "B"):
                return w
            if w.lower() in ("tie", "equal", "same", "neither"):
                return "tie"
        m = re.findall(r"\bvideo\s+([AB])\s+is\s+better\b", text, re.IGNORECASE)
        if len({x.upper() for x in m}) == 1:
            return m[0].upper()
        return None
    except Exception:  # noqa: BLE001
        return None


PARSERS = {"binary": parse_binary, "pointwise": parse_pointwise, "pairwise": parse_pairwise}


# --- log-probabilities ---------------------------------------------------------------------------------

def answer_token_ids(tokenizer, answers: dict[str, tuple[str, ...]]) -> dict[str, list[int]] | None:
    """For each verdict, the first-token ids of its words (with and without a leading space, capitalised
    and lowercase). Ids shared by two verdicts, and the unknown token, are left out; ``None`` when some
    verdict keeps no id (then scores come from the parsed text)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    raw: dict[str, set[int]] = {}
    for verdict, words in answers.items():
        ids: set[int] = set()
        for w in words:
            for variant in {w, " " + w, w.lower(), " " + w.lower()}:
                try:
                    toks = tokenizer.encode(variant, add_special_tokens=False)
                except Exception:  # noqa: BLE001
                    toks = []
                if toks and toks[0] != unk:
                    ids.add(int(toks[0]))
        raw[verdict] = ids
    out = {}
    for verdict, ids in raw.items():
        others = set().union(*(v for k, v in raw.items() if k != verdict))
        keep = sorted(ids - others)
        if not keep:
            return None
        out[verdict] = keep
    return out


def class_probs(logprobs, ids: dict[str, list[int]] | None) -> dict[str, float] | None:
    """Probabilities of the verdicts at the first generated token, renormalised over the verdicts:
    e.g. ``P(Accept) / (P(Accept) + P(Reject))``. ``logprobs``: ``{token id: log-prob}`` (top-k, as vLLM
    returns them) or a dense 1-D array over the vocabulary. ``None`` when no verdict token has any mass."""
    if not ids or logprobs is None or len(logprobs) == 0:
        return None
    if isinstance(logprobs, np.ndarray):
        n = logprobs.shape[0]
        mass = {k: float(np.exp(logprobs[[t for t in v if t < n]]).sum()) for k, v in ids.items()}
    else:
        mass = {k: sum(math.exp(logprobs[t]) for t in v if t in logprobs) for k, v in ids.items()}
    total = sum(mass.values())
    if not total > 0:
        return None
    return {k: m / total for k, m in mass.items()}


def point_score(probs: dict[str, float]) -> float:
    """Expected value of the verdict (Good 1, Normal 0.5, Bad 0; Accept 1, Reject 0)."""
    return float(sum(p * POINT_VALUES[k] for k, p in probs.items()))
