"""Preference losses on per-sample diffusion errors (DESIGN §3). Pure functions, no Ray.

Notation: ``e_θ(x)`` and ``e_ref(x)`` are per-sample mean squared errors of the policy and the
reference on the same noised input (same ``t`` and noise), shape ``[B]``. A lower error means a
higher likelihood (the ELBO view of Diffusion-DPO, Wallace et al. 2023, Eq. 14).
Every function returns ``(loss, metrics)`` where ``metrics`` holds detached floats.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _f(x: torch.Tensor) -> float:
    return float(x.detach().float().mean().item())


def diffusion_dpo_loss(model_err_w: torch.Tensor, model_err_l: torch.Tensor, ref_err_w: torch.Tensor,
                       ref_err_l: torch.Tensor, beta: float):
    """Diffusion-DPO (IPO Eq. 3; Wallace et al. Eq. 14 with the constant T·ω(λ_t) folded into β):

    ``z = -β·((e_θ(w) − e_ref(w)) − (e_θ(l) − e_ref(l)))``, ``loss = mean(−log σ(z))``.
    """
    diff_w = model_err_w - ref_err_w
    diff_l = model_err_l - ref_err_l
    z = -beta * (diff_w - diff_l)
    loss = -F.logsigmoid(z).mean()
    return loss, {"dpo_loss": _f(loss), "implicit_acc": _f((z > 0).float()), "reward_margin": _f(z),
                  "model_err_w": _f(model_err_w), "model_err_l": _f(model_err_l),
                  "ref_err_w": _f(ref_err_w), "ref_err_l": _f(ref_err_l)}


def kto_reference_point(model_err: torch.Tensor, ref_err: torch.Tensor) -> torch.Tensor:
    """KTO reference point ``kl = max(0, mean(e_ref − e_θ)).detach()``, averaged over data-parallel
    ranks when a process group exists (Diffusion-KTO, Li et al. 2024, §4)."""
    g = (ref_err - model_err).detach().float().mean()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        g = g.clone()
        torch.distributed.all_reduce(g, op=torch.distributed.ReduceOp.SUM)
        g = g / torch.distributed.get_world_size()
    return g.clamp(min=0.0)


def diffusion_kto_loss(model_err: torch.Tensor, ref_err: torch.Tensor, desirable: torch.Tensor, beta: float,
                       lambda_desirable: float = 1.0, lambda_undesirable: float = 1.0,
                       kl: torch.Tensor | float | None = None, balance: bool = False):
    """Diffusion-KTO (IPO Eq. 4): ``g = e_ref − e_θ``; ``h = σ(s·β·(g − kl))`` with ``s = +1`` for
    desirable and ``−1`` for undesirable samples; ``loss = mean(λ_s·(1 − h))``.

    ``balance``: each class present in the batch carries an equal share of the loss (``λ_s`` times
    ``B / (k·n_s)``, k the number of classes present), i.e. KTO's rule ``λ_D·n_D = λ_U·n_U``
    (Ethayarajh et al. 2024, §4.2) applied per batch, so a critic that rejects most samples does
    not turn the loss into pushing the model away from everything it draws."""
    g = ref_err - model_err
    if kl is None:
        kl = kto_reference_point(model_err, ref_err)
    kl = torch.as_tensor(kl, dtype=g.dtype, device=g.device)
    des = desirable.to(torch.bool)
    sign = torch.where(des, 1.0, -1.0).to(g.dtype)
    lam = torch.where(des, float(lambda_desirable), float(lambda_undesirable)).to(g.dtype)
    if balance:
        n_d, n_u = int(des.sum()), int((~des).sum())
        k = int(n_d > 0) + int(n_u > 0)
        lam = lam * torch.where(des, des.numel() / (k * max(n_d, 1)), des.numel() / (k * max(n_u, 1))).to(g.dtype)
    h = torch.sigmoid(sign * beta * (g - kl))
    loss = (lam * (1.0 - h)).mean()
    metrics = {"kto_loss": _f(loss), "kl": _f(kl), "implicit_acc": _f((sign * (g - kl) > 0).float())}
    if des.any():
        metrics["reward_desirable"] = _f(g[des])
    if (~des).any():
        metrics["reward_undesirable"] = _f(g[~des])
    return loss, metrics


def rwr_loss(model_err: torch.Tensor, weights: torch.Tensor):
    """Reward-weighted regression / forward-EM (Furuta et al. §3): ``loss = mean(w·e_θ)``."""
    w = weights.detach().to(model_err.dtype)
    loss = (w * model_err).mean()
    return loss, {"rwr_loss": _f(loss), "weight_mean": _f(w), "weight_max": float(w.max().item())}


def rwr_weights(rewards: torch.Tensor, shaping: str = "exp", temperature: float = 0.1,
                eta: float = 1.0, gamma: float = 0.0, threshold: float = 0.8) -> torch.Tensor:
    """Reward shaping for RWR: linear ``η·r + γ``; exponential ``exp(r/β)`` normalised to mean 1 over
    the batch; ``best_of_n``: the indicator ``r >= threshold`` (best-of-N SFT)."""
    r = rewards.float()
    if shaping == "linear":
        return (eta * r + gamma).clamp(min=0.0)
    if shaping == "exp":
        w = torch.softmax(r / temperature, dim=0) * r.numel()
        return w
    if shaping == "best_of_n":
        return (r >= threshold).float()
    raise ValueError(f"unknown RWR shaping {shaping!r}; allowed: linear, exp, best_of_n")


def nll_loss(model_err: torch.Tensor):
    """Diffusion NLL surrogate ``mean(e_θ)`` (the denoising loss; IPO Eq. 5's −log p terms)."""
    loss = model_err.mean()
    return loss, {"nll": _f(loss)}


def ipo_dpo_objective(model_err_w, model_err_l, ref_err_w, ref_err_l, beta: float,
                      model_err_real: torch.Tensor | None = None, lambda_chosen: float = 0.2,
                      lambda_real: float = 0.1):
    """IPO Eq. 5: ``L = L_dpo + λ1·NLL(chosen) + λ2·NLL(real)``."""
    loss, m = diffusion_dpo_loss(model_err_w, model_err_l, ref_err_w, ref_err_l, beta)
    if lambda_chosen > 0:
        nll_w, _ = nll_loss(model_err_w)
        loss = loss + lambda_chosen * nll_w
        m["nll_chosen"] = _f(nll_w)
    if model_err_real is not None and lambda_real > 0 and model_err_real.numel():
        nll_r, _ = nll_loss(model_err_real)
        loss = loss + lambda_real * nll_r
        m["nll_real"] = _f(nll_r)
    m["loss"] = _f(loss)
    return loss, m


def ipo_kto_objective(model_err, ref_err, desirable, beta: float, model_err_real: torch.Tensor | None = None,
                      lambda_real: float = 0.1, lambda_desirable: float = 1.0, lambda_undesirable: float = 1.0,
                      balance: bool = False, lambda_nll_desirable: float = 0.0):
    """IPO Eq. 6: ``L = L_kto + λ·NLL(real)``; with ``lambda_nll_desirable > 0`` also ``+ λ_d·NLL(desirable)``
    (not in IPO: the counterpart of the DPO objective's λ1·NLL(chosen))."""
    loss, m = diffusion_kto_loss(model_err, ref_err, desirable, beta, lambda_desirable, lambda_undesirable,
                                 balance=balance)
    if model_err_real is not None and lambda_real > 0 and model_err_real.numel():
        nll_r, _ = nll_loss(model_err_real)
        loss = loss + lambda_real * nll_r
        m["nll_real"] = _f(nll_r)
    if lambda_nll_desirable > 0 and desirable.any():
        nll_d, _ = nll_loss(model_err[desirable.to(torch.bool)])
        loss = loss + lambda_nll_desirable * nll_d
        m["nll_desirable"] = _f(nll_d)
    m["loss"] = _f(loss)
    return loss, m
