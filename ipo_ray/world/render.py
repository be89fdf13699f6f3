"""Draw correct (and deliberately flawed) videos of world prompts.

``render(prompt, seed)`` returns ``uint8 [F, H, W, 3]`` on a black background, hard edges, pure
colors. The seed picks sizes, start positions and speeds, so one prompt has many correct videos.
``render(prompt, seed, flaw=...)`` draws the same scene with one of the failure modes real T2V
models show (used for the pretraining mix and for the judge's tests).
"""

from __future__ import annotations

import zlib

import numpy as np

from .grammar import COLORS, Scene, parse_prompt

FLAWS = ("reversed", "vanish", "wrong_color", "frozen", "wrong_shape")


def _rng(prompt: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(prompt.encode())])


def _draw(frame: np.ndarray, shape: str, cx: float, cy: float, size: float, color) -> None:
    """Draw a filled square (side ``size``) or circle (diameter ``size``) centred at (cx, cy)."""
    h, w = frame.shape[:2]
    # Snap the centre to the half-pixel grid so small discrete shapes stay symmetric (a circle
    # never gains a filled bounding-box corner from sub-pixel placement).
    cx, cy = round(cx * 2) / 2, round(cy * 2) / 2
    ys, xs = np.mgrid[0:h, 0:w]
    px, py = xs + 0.5, ys + 0.5
    r = size / 2.0
    if shape == "square":
        mask = (np.abs(px - cx) <= r) & (np.abs(py - cy) <= r)
    else:
        mask = (px - cx) ** 2 + (py - cy) ** 2 <= r * r
        ys_on, xs_on = np.nonzero(mask)
        if ys_on.size:  # at small sizes rasterisation can fill the bbox corners: a circle never does
            y0, y1, x0, x1 = ys_on.min(), ys_on.max(), xs_on.min(), xs_on.max()
            mask[[y0, y0, y1, y1], [x0, x1, x0, x1]] = False
    frame[mask] = color


def _tracks(scene: Scene, rng: np.random.Generator, f: int, h: int, w: int, reverse: bool):
    """Per object: arrays cx, cy, size over frames."""
    t = np.linspace(0.0, 1.0, f)
    tracks = []
    if scene.category in ("move", "fall"):
        size = rng.uniform(0.34, 0.42) * w
        dx, dy = scene.direction
        if reverse:
            dx, dy = -dx, -dy
        lo, hi = size / 2 + rng.uniform(0, 0.06 * w), w - size / 2 - rng.uniform(0, 0.06 * w)
        across = rng.uniform(size / 2 + 1.0, w - size / 2 - 1.0)  # clear of the side borders
        prog = t**1.6 if scene.category == "fall" and not reverse else t
        if scene.category == "fall" and reverse:
            prog = 1 - (1 - t) ** 1.6
        if dx != 0:
            a, b = (lo, hi) if dx > 0 else (hi, lo)
            cx, cy = a + (b - a) * prog, np.full(f, across)
        else:
            a, b = (lo, hi) if dy > 0 else (hi, lo)
            cx, cy = np.full(f, across), a + (b - a) * prog
        tracks.append((cx, cy, np.full(f, size)))
    elif scene.category == "grow":
        s0, s1 = rng.uniform(0.25, 0.3) * w, rng.uniform(0.6, 0.7) * w
        if reverse:
            s0, s1 = s1, s0
        c = rng.uniform(0.45, 0.55, size=2) * w
        tracks.append((np.full(f, c[0]), np.full(f, c[1]), s0 + (s1 - s0) * t))
    elif scene.category == "leave":
        size = rng.uniform(0.34, 0.42) * w
        side = int(rng.integers(4))  # exit direction: right, left, down, up
        start = rng.uniform(0.4, 0.6, size=2) * w
        # Fully outside at 75% of the clip, so the last frames are empty.
        end = start.copy()
        axis, sign = (0, 1) if side == 0 else (0, -1) if side == 1 else (1, 1) if side == 2 else (1, -1)
        end[axis] = (w + size / 2 + 1) if sign > 0 else -(size / 2 + 1)
        prog = np.clip(t / 0.75, 0, 1)
        if reverse:  # enters instead of leaving
            prog = prog[::-1]
        pos = start[None, :] + (end - start)[None, :] * prog[:, None]
        tracks.append((pos[:, 0], pos[:, 1], np.full(f, size)))
    elif scene.category == "toward":
        # One object in the top half, one in the bottom half; they close in horizontally.
        size = rng.uniform(0.31, 0.345) * w  # circles keep empty bbox corners below ~0.35 w
        top = rng.uniform(size / 2 + 1.0, h / 2 - size / 2 - 0.2)
        bottom = rng.uniform(h / 2 + size / 2 + 0.2, h - size / 2 - 1.0)
        cy = (top, bottom) if rng.random() < 0.5 else (bottom, top)
        a0, a1 = size / 2 + 1.0 + rng.uniform(0, 0.03 * w), w / 2 - 0.5
        b0, b1 = w - a0, w - a1
        prog = t[::-1] if reverse else t
        tracks.append((a0 + (a1 - a0) * prog, np.full(f, cy[0]), np.full(f, size)))
        tracks.append((b0 + (b1 - b0) * prog, np.full(f, cy[1]), np.full(f, size)))
    else:  # pragma: no cover - grammar guarantees the category
        raise ValueError(scene.category)
    return tracks


def render(prompt: str, seed: int, frames: int = 8, height: int = 16, width: int = 16,
           flaw: str | None = None) -> np.ndarray:
    """A video of ``prompt``: correct when ``flaw`` is None, else with that failure mode."""
    if flaw is not None and flaw not in FLAWS:
        raise ValueError(f"unknown flaw {flaw!r}; allowed: {list(FLAWS)}")
    scene = parse_prompt(prompt)
    rng = _rng(prompt, seed)
    tracks = _tracks(scene, rng, frames, height, width, reverse=flaw == "reversed")
    objects = list(scene.objects)
    if flaw == "wrong_color":
        others = [c for c in COLORS if c not in {o[0] for o in objects}]
        objects[0] = (others[int(rng.integers(len(others)))], objects[0][1])
    if flaw == "wrong_shape":
        objects[0] = (objects[0][0], "circle" if objects[0][1] == "square" else "square")
    video = np.zeros((frames, height, width, 3), np.uint8)
    vanish_at = frames
    if flaw == "vanish":  # mid-clip, and for 'leaves the frame' before the object reaches the edge
        vanish_at = int(rng.integers(1, 3)) if scene.category == "leave" else int(rng.integers(2, max(3, frames - 2)))
    for i in range(frames):
        for k, ((color, shape), (cx, cy, size)) in enumerate(zip(objects, tracks)):
            if k == 0 and i >= vanish_at:
                continue
            _draw(video[i], shape, cx[i], cy[i], size[i], COLORS[color])
    if flaw == "frozen":
        video[:] = video[0]
    return video
