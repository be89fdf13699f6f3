"""Between uint8 frames ``[B, F, H, W, 3]`` and model latents ``[B, F', C, H', W']``.

``IdentityCodec`` is pixel space (the tiny world models): latents are the frames scaled to [-1, 1].
``VAECodec`` wraps diffusers' ``AutoencoderKLCogVideoX`` (real CogVideoX checkpoints).
"""

from __future__ import annotations

import numpy as np
import torch


def frames_to_unit(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, F, H, W, 3]`` -> float ``[B, F, 3, H, W]`` in [-1, 1]."""
    x = torch.as_tensor(np.asarray(frames)).float()
    return (x / 127.5 - 1.0).permute(0, 1, 4, 2, 3).contiguous()


def unit_to_frames(x: torch.Tensor) -> np.ndarray:
    """float ``[B, F, 3, H, W]`` in [-1, 1] -> uint8 ``[B, F, H, W, 3]``."""
    x = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 1, 3, 4, 2).cpu().numpy()


class IdentityCodec:
    """Pixel-space models: the latent is the video itself."""

    kind = "identity"
    latent_channels = 3

    def encode(self, frames) -> torch.Tensor:
        return frames_to_unit(frames)

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        return unit_to_frames(latents)

    def to(self, device):  # noqa: D401 - nothing to move
        return self


class VAECodec:
    """diffusers ``AutoencoderKLCogVideoX``: frames <-> scaled latents, as CogVideoXPipeline does."""

    kind = "vae"

    def __init__(self, vae, tiling: bool = True):
        self.vae = vae.eval().requires_grad_(False)
        if tiling:  # CogVideoXPipeline users call this too: bounded memory at 480x720, same latents' scale
            self.vae.enable_tiling()
        else:
            self.vae.disable_tiling()
        self.scale = float(vae.config.scaling_factor)
        self.latent_channels = int(vae.config.latent_channels)

    @classmethod
    def from_pretrained(cls, path: str, dtype=torch.float32, tiling: bool = True):
        from diffusers import AutoencoderKLCogVideoX

        return cls(AutoencoderKLCogVideoX.from_pretrained(path, subfolder="vae", torch_dtype=dtype), tiling)

    @torch.no_grad()
    def encode(self, frames) -> torch.Tensor:
        x = frames_to_unit(frames).to(self.vae.device, self.vae.dtype).permute(0, 2, 1, 3, 4)
        z = self.vae.encode(x).latent_dist.sample() * self.scale
        return z.permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        z = latents.permute(0, 2, 1, 3, 4).to(self.vae.dtype) / self.scale
        x = self.vae.decode(z).sample.permute(0, 2, 1, 3, 4)
        return unit_to_frames(x)

    def to(self, device):
        self.vae.to(device)
        return self
