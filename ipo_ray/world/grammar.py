"""The verifiable world's prompt grammar (DESIGN §5).

Prompts are plain English over a small vocabulary:

- ``a {color} {shape} {motion}`` with the motions of the AI-feedback paper's hard categories:
  directional movement (``moves from left to right``, ``moves from right to left``,
  ``rises up``), falling (``falls down``), object removal (``leaves the frame``) and
  deformation (``grows``);
- ``a {color} {shape} and a {color} {shape} move toward each other`` (multiple objects).

Pure module: no Ray, no torch.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
}
SHAPES: tuple[str, ...] = ("square", "circle")

# motion phrase -> (category, unit direction (dx, dy) in image coordinates, y grows downward)
MOTIONS: dict[str, tuple[str, tuple[int, int]]] = {
    "moves from left to right": ("move", (1, 0)),
    "moves from right to left": ("move", (-1, 0)),
    "falls down": ("fall", (0, 1)),
    "rises up": ("move", (0, -1)),
    "leaves the frame": ("leave", (0, 0)),
    "grows": ("grow", (0, 0)),
}
MULTI_MOTION = "move toward each other"
CATEGORIES = ("move", "fall", "leave", "grow", "toward")


@dataclass(frozen=True)
class Scene:
    """A parsed prompt: the objects (color, shape) and what they must do."""

    objects: tuple[tuple[str, str], ...]
    category: str  # one of CATEGORIES
    direction: tuple[int, int] = (0, 0)
    motion: str = ""


_SINGLE = re.compile(r"^a (\w+) (\w+) (.+)$")
_MULTI = re.compile(r"^a (\w+) (\w+) and a (\w+) (\w+) (.+)$")


def _check_object(color: str, shape: str, prompt: str) -> tuple[str, str]:
    if color not in COLORS:
        raise ValueError(f"prompt {prompt!r}: unknown color {color!r}; allowed: {sorted(COLORS)}")
    if shape not in SHAPES:
        raise ValueError(f"prompt {prompt!r}: unknown shape {shape!r}; allowed: {list(SHAPES)}")
    return color, shape


def parse_prompt(prompt: str) -> Scene:
    """Parse a world prompt into a :class:`Scene`; raises ``ValueError`` naming the bad word."""
    text = " ".join(prompt.strip().lower().split())
    m = _MULTI.match(text)
    if m:
        a = _check_object(m.group(1), m.group(2), prompt)
        b = _check_object(m.group(3), m.group(4), prompt)
        if m.group(5) != MULTI_MOTION:
            raise ValueError(f"prompt {prompt!r}: unknown two-object motion {m.group(5)!r}; allowed: {MULTI_MOTION!r}")
        if a[0] == b[0]:
            raise ValueError(f"prompt {prompt!r}: the two objects must have different colors")
        return Scene(objects=(a, b), category="toward", motion=MULTI_MOTION)
    m = _SINGLE.match(text)
    if not m:
        raise ValueError(f"prompt {prompt!r} does not follow 'a {{color}} {{shape}} {{motion}}'")
    obj = _check_object(m.group(1), m.group(2), prompt)
    motion = m.group(3)
    if motion not in MOTIONS:
        raise ValueError(f"prompt {prompt!r}: unknown motion {motion!r}; allowed: {sorted(MOTIONS)}")
    category, direction = MOTIONS[motion]
    return Scene(objects=(obj,), category=category, direction=direction, motion=motion)


def single_prompts() -> list[str]:
    return [f"a {c} {s} {m}" for c, s, m in itertools.product(COLORS, SHAPES, MOTIONS)]


def multi_prompts() -> list[str]:
    out = []
    for (c1, s1), (c2, s2) in itertools.permutations(itertools.product(COLORS, SHAPES), 2):
        if c1 != c2:
            out.append(f"a {c1} {s1} and a {c2} {s2} {MULTI_MOTION}")
    return out


def vocabulary() -> list[str]:
    """Every word a world prompt can contain (the tokenizer's vocabulary)."""
    words: set[str] = {"a", "and"} | set(COLORS) | set(SHAPES)
    for phrase in list(MOTIONS) + [MULTI_MOTION]:
        words.update(phrase.split())
    return sorted(words)


def _held_out_single(color_i: int, shape_i: int, motion_i: int) -> bool:
    # One (color, shape) pair per motion is held out, rotating so every word stays in training.
    return (color_i * len(SHAPES) + shape_i) % 8 == (motion_i * 3) % 8


def splits() -> dict[str, list[str]]:
    """Train and held-out prompts. Every held-out word appears in training; no held-out
    combination does. Deterministic."""
    train, held = [], []
    colors, motions = list(COLORS), list(MOTIONS)
    for ci, c in enumerate(colors):
        for si, s in enumerate(SHAPES):
            for mi, m in enumerate(motions):
                (held if _held_out_single(ci, si, mi) else train).append(f"a {c} {s} {m}")
    multi = multi_prompts()
    # A fixed, spread-out subset of the 48 ordered two-object prompts: 8 train, 4 held-out.
    train += multi[0:48:6]
    held += multi[3:48:12]
    return {"train": train, "heldout": held}
