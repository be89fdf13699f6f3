"""Video files: lossless ``.npy`` frames, viewable mp4 (PyAV, H.264) and GIF (Pillow)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscale of ``[F, H, W, 3]`` so a 16×16 world clip is visible."""
    if factor <= 1:
        return frames
    return frames.repeat(factor, axis=1).repeat(factor, axis=2)


def mp4_bytes(frames: np.ndarray, fps: int = 8, scale: int = 8) -> bytes:
    """H.264 mp4 of uint8 ``[F, H, W, 3]`` (yuv420p; sides rounded up to even)."""
    frames = upscale(np.asarray(frames, np.uint8), scale)
    f, h, w, _ = frames.shape
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
        f, h, w, _ = frames.shape
    buf = io.BytesIO()
    import av  # imported here: evaluation and the world need no video codec (a GPU box may lack PyAV)

    with av.open(buf, mode="w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for fr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(fr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def _palette_frame(frame: np.ndarray, scale: int) -> Image.Image:
    """One GIF frame. With at most 256 colours (every 16x16 world frame) the palette is the frame's own colours,
    so the GIF is lossless and no quantizer runs (Pillow's cost 17 of 18 ms a clip); more colours: Pillow quantizes."""
    codes = (frame[..., 0].astype(np.uint32) << 16) | (frame[..., 1].astype(np.uint32) << 8) | frame[..., 2]
    colors, index = np.unique(codes, return_inverse=True)
    if colors.size > 256:
        return Image.fromarray(upscale(frame[None], scale)[0])
    image = Image.fromarray(upscale(index.reshape(codes.shape).astype(np.uint8)[None, ..., None], scale)[0, ..., 0])
    image.putpalette(np.stack([colors >> 16, (colors >> 8) & 255, colors & 255], 1).astype(np.uint8).tobytes())
    return image  # putpalette made the "L" index image a "P" image


def gif_bytes(frames: np.ndarray, fps: int = 8, scale: int = 8) -> bytes:
    images = [_palette_frame(fr, scale) for fr in np.asarray(frames, np.uint8)]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return buf.getvalue()


def read_video(path_or_bytes) -> np.ndarray:
    """Decode an mp4/GIF (path or bytes) to uint8 ``[F, H, W, 3]``."""
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray)) else str(path_or_bytes)
    import av

    with av.open(src) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def save_sample(frames: np.ndarray, stem: Path) -> tuple[str, str]:
    """Write ``stem.npy`` (lossless) and ``stem.gif`` (viewable); returns both paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    npy, gif = stem.with_suffix(".npy"), stem.with_suffix(".gif")
    np.save(npy, np.asarray(frames, np.uint8))
    gif.write_bytes(gif_bytes(frames))
    return str(npy), str(gif)
