import numpy as np

from ipo_ray.metrics import dynamic_degree, motion_smoothness, temporal_flicker, video_metrics
from ipo_ray.video import gif_bytes, mp4_bytes, read_video
from ipo_ray.world import render


def test_flow_is_larger_for_moving_than_static_videos():
    moving = render("a red square moves from left to right", 0)
    static = np.repeat(moving[:1], 8, axis=0)
    assert dynamic_degree(moving) > 0.5 > dynamic_degree(static) == 0.0


def test_flicker_is_lower_for_noisy_videos():
    smooth = render("a blue circle falls down", 1)
    noisy = np.clip(smooth.astype(int) + np.random.default_rng(0).integers(-80, 80, smooth.shape), 0, 255).astype(np.uint8)
    assert temporal_flicker(noisy) < temporal_flicker(smooth) <= 1.0
    assert motion_smoothness(noisy) < motion_smoothness(smooth)
    assert set(video_metrics(smooth)) == {"temporal_flicker", "dynamic_degree", "motion_smoothness"}


def test_video_files_decode_to_the_right_shape():
    v = render("a green square grows", 2)
    mp4 = mp4_bytes(v, scale=4)
    back = read_video(mp4)
    assert back.shape == (8, 64, 64, 3)
    # H.264 is lossy but the picture is the same one, upscaled.
    assert np.abs(back[:, ::4, ::4].astype(int) - v.astype(int)).mean() < 12
    moving = render("a red circle moves from right to left", 2)
    g = read_video(gif_bytes(moving, scale=2))  # GIF merges identical consecutive frames: use a moving clip
    assert g.shape == (8, 32, 32, 3) and np.array_equal(g[:, ::2, ::2], moving)


def test_gif_is_lossless_for_world_clips_and_for_many_colours_still_close():
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)  # one colour per pixel: the own-palette path
    assert np.array_equal(read_video(gif_bytes(noisy, scale=3))[:, ::3, ::3], noisy)
    many = rng.integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)  # 576 colours: Pillow quantizes (lossy)
    back = read_video(gif_bytes(many, scale=1))
    assert back.shape == many.shape and np.abs(back.astype(int) - many.astype(int)).mean() < 40
