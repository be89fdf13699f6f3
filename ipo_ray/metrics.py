"""CPU video metrics in the VBench style (DESIGN §6), no model downloads. Pure functions.

- temporal flicker: ``(255 − m) / 255`` with ``m`` the mean absolute difference of consecutive
  frames (VBench "temporal flickering"; higher = steadier);
- dynamic degree: OpenCV Farnebäck optical flow between consecutive frames, the mean of the top 5%
  flow magnitudes, averaged over frame pairs (VBench uses RAFT; same statistic);
- motion smoothness: how well the middle of every frame triple is predicted by linear
  interpolation of its neighbours, ``1 − mean|f_t − (f_{t−1} + f_{t+1})/2| / 255`` (VBench
  interpolates with a learned model; linear interpolation is the CPU stand-in).
"""

from __future__ import annotations

import cv2
import numpy as np


def temporal_flicker(video: np.ndarray) -> float:
    v = np.asarray(video, np.float32)
    if v.shape[0] < 2:
        return 1.0
    m = np.abs(np.diff(v, axis=0)).mean()
    return float((255.0 - m) / 255.0)


def flow_magnitudes(video: np.ndarray, upscale: int = 4) -> list[np.ndarray]:
    """Per consecutive frame pair, the Farnebäck flow magnitude field (pixels of the input)."""
    v = np.asarray(video, np.uint8)
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in v]
    if upscale > 1:  # tiny frames: flow is more stable on an upscaled image
        gray = [cv2.resize(g, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_LINEAR) for g in gray]
    out = []
    for a, b in zip(gray[:-1], gray[1:]):
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 9, 3, 5, 1.1, 0)
        out.append(np.linalg.norm(flow, axis=-1) / max(upscale, 1))
    return out


def dynamic_degree(video: np.ndarray, top: float = 0.05) -> float:
    mags = flow_magnitudes(video)
    if not mags:
        return 0.0
    vals = []
    for m in mags:
        flat = np.sort(m.ravel())
        k = max(1, int(round(top * flat.size)))
        vals.append(flat[-k:].mean())
    return float(np.mean(vals))


def motion_smoothness(video: np.ndarray) -> float:
    v = np.asarray(video, np.float32)
    if v.shape[0] < 3:
        return 1.0
    mid = 0.5 * (v[:-2] + v[2:])
    return float(1.0 - np.abs(v[1:-1] - mid).mean() / 255.0)


def video_metrics(video: np.ndarray) -> dict[str, float]:
    return {"temporal_flicker": temporal_flicker(video), "dynamic_degree": dynamic_degree(video),
            "motion_smoothness": motion_smoothness(video)}
