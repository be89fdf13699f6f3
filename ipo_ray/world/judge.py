"""The world judge: a score in [0, 1] from what the frames show (DESIGN §5).

Pixels are classified by hue, not exact value, so a blurry generated video is judged on what a
person would see: a pixel brighter than ``DARK`` whose normalised color is within ``HUE_TOL`` of a
palette color belongs to that color; any other bright pixel is a stray. Per frame and object we
measure the area, centroid and bounding box, then score four things and multiply them:

- presence: every object of the prompt is visible (for ``leaves the frame``: visible at first);
- cleanliness: nothing else appears (stray or other-colored pixels beyond a small tolerance);
- shape: a square fills its bounding box and its corners, a circle does not (frames where the
  object is whole);
- motion: the track goes the right way far enough, monotonically (per category).

``score = presence * clean * motion * (0.4 + 0.6 * shape)``; acceptance is ``score >= 0.8``.
Pure module: numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grammar import COLORS, Scene, parse_prompt

DARK = 64  # max channel below this is background
CORE = 128  # max channel at or above this counts toward an object's area
HUE_TOL = 0.45
SQUARE_FILL = 0.8  # mean of bbox fill ratio and corner occupancy: squares ~1, circles ~0.4
ACCEPT = 0.8


@dataclass
class Track:
    area: np.ndarray  # [F]
    cx: np.ndarray  # [F] (nan where absent)
    cy: np.ndarray
    fill: np.ndarray  # [F] (nan where not evaluable)
    border: np.ndarray  # [F] bool: bbox touches the frame border


def _hue_masks(video: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    v = video.astype(np.float32)
    bright = v.max(axis=-1)
    lit = bright >= DARK
    q = v / np.maximum(bright, 1.0)[..., None]
    masks = {}
    for name, rgb in COLORS.items():
        u = np.asarray(rgb, np.float32) / 255.0
        masks[name] = lit & (np.abs(q - u).max(axis=-1) < HUE_TOL)
    return masks, lit, bright >= CORE


def _track(mask: np.ndarray, core: np.ndarray, min_area: float) -> Track:
    f, h, w = mask.shape
    m = mask & core
    area = m.reshape(f, -1).sum(axis=1).astype(np.float32)
    cx, cy = np.full(f, np.nan), np.full(f, np.nan)
    fill, border = np.full(f, np.nan), np.zeros(f, bool)
    for i in range(f):
        if area[i] < min_area:
            continue
        ys, xs = np.nonzero(m[i])
        cx[i], cy[i] = xs.mean() + 0.5, ys.mean() + 0.5
        x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
        border[i] = x0 == 0 or y0 == 0 or x1 == w - 1 or y1 == h - 1
        bw, bh = x1 - x0 + 1, y1 - y0 + 1
        if not border[i] and min(bw, bh) >= 5:
            corners = m[i, [y0, y0, y1, y1], [x0, x1, x0, x1]]
            fill[i] = 0.5 * area[i] / float(bw * bh) + 0.5 * corners.mean()
    return Track(area, cx, cy, fill, border)


def _shape_score(track: Track, shape: str) -> float:
    fills = track.fill[~np.isnan(track.fill)]
    if fills.size == 0:
        return 1.0
    ok = fills >= SQUARE_FILL if shape == "square" else (fills < SQUARE_FILL) & (fills >= 0.2)
    return float(ok.mean())


def _monotone(steps: np.ndarray, slack: float) -> float:
    return float((steps >= -slack).mean()) if steps.size else 0.0


def _motion_score(scene: Scene, tracks: list[Track], present: np.ndarray, w: int, h: int) -> float:
    t = tracks[0]
    if scene.category in ("move", "fall"):
        idx = np.nonzero(present[0])[0]
        if idx.size < 2:
            return 0.0
        dx, dy = scene.direction
        along = (t.cx[idx] * dx + t.cy[idx] * dy)
        perp = (t.cx[idx] * dy - t.cy[idx] * dx)
        extent = w if dx else h
        progress = np.clip((along[-1] - along[0]) / (0.4 * extent), 0.0, 1.0)
        drift = np.clip(1.0 - (np.abs(perp - perp[0]).max() - 0.2 * extent) / (0.2 * extent), 0.0, 1.0)
        return float(progress * _monotone(np.diff(along), 0.5) * drift)
    if scene.category == "grow":
        idx = np.nonzero(present[0])[0]
        if idx.size < 2:
            return 0.0
        a = t.area[idx]
        progress = np.clip((a[-1] / max(a[0], 1.0) - 1.0) / 1.5, 0.0, 1.0)
        wander = np.hypot(t.cx[idx] - t.cx[idx][0], t.cy[idx] - t.cy[idx][0]).max()
        steady = np.clip(1.0 - (wander - 0.15 * w) / (0.15 * w), 0.0, 1.0)
        return float(progress * _monotone(np.diff(a) / max(a.max(), 1.0), 0.1) * steady)
    if scene.category == "leave":
        p = present[0]
        if not p[0] or p[-1]:
            return 0.0
        last = int(np.nonzero(p)[0].max())
        gone_for_good = not p[last + 1:].any() and p[: last + 1].all()
        at_edge = bool(t.border[last]) and t.area[last] <= 0.7 * t.area[: last + 1].max()
        return 1.0 if (gone_for_good and at_edge) else 0.2 if gone_for_good else 0.0
    if scene.category == "toward":
        both = present[0] & present[1]
        idx = np.nonzero(both)[0]
        if idx.size < 2:
            return 0.0
        a, b = tracks
        # The gap along the axis on which they approach (horizontal or vertical) must close.
        gaps = [np.abs(a.cx[idx] - b.cx[idx]), np.abs(a.cy[idx] - b.cy[idx])]
        d = max(gaps, key=lambda g: g[0] - g[-1])
        progress = np.clip((d[0] - d[-1]) / (0.25 * w), 0.0, 1.0)
        return float(progress * _monotone(-np.diff(d), 0.5))
    raise ValueError(scene.category)  # pragma: no cover


def judge_details(video: np.ndarray, prompt: str) -> dict:
    """Score ``video`` (uint8 ``[F, H, W, 3]``) against ``prompt`` with every component."""
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must be uint8 [F, H, W, 3], got shape {video.shape}")
    scene = parse_prompt(prompt)
    f, h, w, _ = video.shape
    min_area = max(3.0, 3.0 * h * w / 256.0)
    masks, lit, core = _hue_masks(video)
    tracks = [_track(masks[c], core, min_area) for c, _ in scene.objects]
    present = np.stack([tr.area >= min_area for tr in tracks])  # [objects, F]
    if scene.category == "leave":
        presence = float(present[0, 0])
    else:
        presence = float(present.all(axis=0).mean())
    expected = np.zeros_like(lit)
    for c, _ in scene.objects:
        expected |= masks[c]
    stray = (lit & ~expected).reshape(f, -1).sum(axis=1)
    tol = 0.03 * h * w
    clean = float(np.clip(1.0 - np.maximum(stray - tol, 0) / (0.05 * h * w), 0.0, 1.0).mean())
    shape = float(np.min([_shape_score(tr, s) for tr, (_, s) in zip(tracks, scene.objects)]))
    motion = _motion_score(scene, tracks, present, w, h)
    score = presence * clean * motion * (0.4 + 0.6 * shape)
    return {"score": float(score), "presence": presence, "clean": clean, "shape": shape,
            "motion": motion, "category": scene.category}


def judge(video: np.ndarray, prompt: str) -> float:
    """World-judge score in [0, 1]; ``>= ACCEPT`` (0.8) means the video shows the prompt."""
    return judge_details(video, prompt)["score"]


def reason(details: dict) -> str:
    """A one-line human reason for a score (what a critic's 'reason' field holds)."""
    weak = [k for k in ("presence", "clean", "shape", "motion") if details[k] < 0.8]
    return "all criteria met" if not weak else "weak: " + ", ".join(f"{k}={details[k]:.2f}" for k in weak)
