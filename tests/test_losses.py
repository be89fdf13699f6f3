import math
import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from ipo_ray.losses import (diffusion_dpo_loss, diffusion_kto_loss, ipo_dpo_objective, ipo_kto_objective,
                            kto_reference_point, nll_loss, rwr_loss, rwr_weights)

from .conftest import tiny_config


def t(*x):
    return torch.tensor(x, dtype=torch.float64)


def test_dpo_matches_hand_computation():
    mw, ml, rw, rl = t(0.5, 0.2), t(0.6, 0.1), t(0.55, 0.25), t(0.5, 0.2)
    beta = 10.0
    loss, m = diffusion_dpo_loss(mw, ml, rw, rl, beta)
    z = [-beta * ((0.5 - 0.55) - (0.6 - 0.5)), -beta * ((0.2 - 0.25) - (0.1 - 0.2))]  # [1.5, -0.5]
    expect = np.mean([math.log1p(math.exp(-zi)) for zi in z])
    assert loss.item() == pytest.approx(expect, rel=1e-9)
    assert m["implicit_acc"] == pytest.approx(0.5)
    assert m["reward_margin"] == pytest.approx(np.mean(z))


def test_dpo_at_reference_is_log2():
    e = t(0.3, 0.4, 0.5)
    loss, m = diffusion_dpo_loss(e, e.flip(0), e, e.flip(0), beta=123.0)
    assert loss.item() == pytest.approx(math.log(2))
    assert m["implicit_acc"] == 0.0


def test_kto_matches_hand_computation():
    model, ref = t(0.2, 0.5, 0.4), t(0.3, 0.4, 0.4)
    des = torch.tensor([True, False, True])
    g = np.array([0.1, -0.1, 0.0])
    kl = max(0.0, g.mean())  # 0.0
    beta = 5.0
    h = [1 / (1 + math.exp(-beta * (g[0] - kl))), 1 / (1 + math.exp(beta * (g[1] - kl))),
         1 / (1 + math.exp(-beta * (g[2] - kl)))]
    expect = np.mean([1 - h[0], 2.0 * (1 - h[1]), 1 - h[2]])
    loss, m = diffusion_kto_loss(model, ref, des, beta, lambda_desirable=1.0, lambda_undesirable=2.0)
    assert loss.item() == pytest.approx(expect, rel=1e-9)
    assert m["kl"] == pytest.approx(0.0)


def test_kto_balance_gives_each_class_an_equal_share():
    # One desirable row among four: balanced, it weighs as much as the three undesirable rows together.
    model, ref = t(0.2, 0.5, 0.4, 0.3), t(0.3, 0.4, 0.4, 0.35)
    des = torch.tensor([True, False, False, False])
    beta = 5.0
    g = np.array([0.1, -0.1, 0.0, 0.05])
    kl = max(0.0, g.mean())
    one_minus_h = [1 - 1 / (1 + math.exp(-beta * (g[0] - kl)))] + [1 - 1 / (1 + math.exp(beta * (g[i] - kl)))
                                                                    for i in (1, 2, 3)]
    expect = 0.5 * 3.0 * one_minus_h[0] + 0.5 * np.mean(one_minus_h[1:])  # lambda_D = 3 (the test's) on its half
    loss, _ = diffusion_kto_loss(model, ref, des, beta, lambda_desirable=3.0, balance=True)
    assert loss.item() == pytest.approx(expect, rel=1e-6)  # the reference point is reduced in float32
    unbalanced, _ = diffusion_kto_loss(model, ref, des, beta, lambda_desirable=3.0)
    assert unbalanced.item() == pytest.approx(np.mean([3.0 * one_minus_h[0], *one_minus_h[1:]]), rel=1e-6)
    # A batch with one class only is its plain mean (no factor 1/2).
    only_u = torch.zeros(4, dtype=torch.bool)
    b, _ = diffusion_kto_loss(model, ref, only_u, beta, balance=True)
    assert b.item() == pytest.approx(diffusion_kto_loss(model, ref, only_u, beta)[0].item(), rel=1e-9)


def test_kto_nll_on_desirable_rows_adds_their_mean_error_only():
    model, ref = t(0.2, 0.5, 0.4, 0.3), t(0.3, 0.4, 0.4, 0.35)
    des = torch.tensor([True, False, True, False])
    real = t(0.05, 0.07)
    base, _ = ipo_kto_objective(model, ref, des, 5.0, real, lambda_real=0.1)
    with_d, m = ipo_kto_objective(model, ref, des, 5.0, real, lambda_real=0.1, lambda_nll_desirable=0.5)
    assert with_d.item() == pytest.approx(base.item() + 0.5 * (0.2 + 0.4) / 2, rel=1e-9)
    assert m["nll_desirable"] == pytest.approx(0.3)
    # Its gradient lowers the error on the desirable rows only.
    x = model.clone().requires_grad_(True)
    extra = ipo_kto_objective(x, ref, des, 5.0, lambda_nll_desirable=0.5)[0] - ipo_kto_objective(x, ref, des, 5.0)[0]
    extra.backward()
    assert x.grad.tolist() == pytest.approx([0.25, 0.0, 0.25, 0.0])
    # No desirable row in the batch: nothing added.
    none = torch.zeros(4, dtype=torch.bool)
    assert ipo_kto_objective(model, ref, none, 5.0, lambda_nll_desirable=0.5)[0].item() == \
        pytest.approx(ipo_kto_objective(model, ref, none, 5.0)[0].item())


def test_kto_reference_point_is_clamped_mean():
    assert kto_reference_point(t(0.1, 0.1), t(0.3, 0.5)).item() == pytest.approx(0.3)
    assert kto_reference_point(t(0.3, 0.5), t(0.1, 0.1)).item() == 0.0
    # An explicit kl shifts the utility: with kl = g the desirable utility is exactly 0.5.
    loss, _ = diffusion_kto_loss(t(0.1), t(0.3), torch.tensor([True]), beta=7.0, kl=0.2)
    assert loss.item() == pytest.approx(0.5)


def _kto_rank(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    model = t(0.1) if rank == 0 else t(0.5)
    ref = t(0.5) if rank == 0 else t(0.5)  # g = 0.4 on rank 0, 0.0 on rank 1 -> mean 0.2
    out[rank] = kto_reference_point(model, ref).item()
    torch.distributed.destroy_process_group()


def test_kto_reference_point_is_averaged_across_ranks():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_kto_rank, args=(2, port, out), nprocs=2, join=True)
    assert out[0] == pytest.approx(0.2) and out[1] == pytest.approx(0.2)


def test_rwr_and_weights():
    r = t(0.0, 0.5, 1.0)
    w_exp = rwr_weights(r, "exp", temperature=0.5)
    assert w_exp.sum().item() == pytest.approx(3.0) and w_exp[2] > w_exp[1] > w_exp[0]
    assert rwr_weights(r, "linear", eta=2.0, gamma=1.0).tolist() == [1.0, 2.0, 3.0]
    assert rwr_weights(r, "best_of_n", threshold=0.8).tolist() == [0.0, 0.0, 1.0]
    loss, _ = rwr_loss(t(1.0, 2.0, 3.0), t(0.0, 1.0, 2.0))
    assert loss.item() == pytest.approx((0 + 2 + 6) / 3)
    with pytest.raises(ValueError, match="shaping"):
        rwr_weights(r, "cubic")


def test_ipo_totals_add_the_nll_terms():
    mw, ml, rw, rl, real = t(0.5), t(0.6), t(0.5), t(0.6), t(0.8, 1.0)
    base, _ = diffusion_dpo_loss(mw, ml, rw, rl, 1.0)
    total, m = ipo_dpo_objective(mw, ml, rw, rl, 1.0, real, lambda_chosen=0.2, lambda_real=0.1)
    assert total.item() == pytest.approx(base.item() + 0.2 * 0.5 + 0.1 * 0.9)
    assert m["nll_real"] == pytest.approx(0.9)
    k, _ = diffusion_kto_loss(t(0.5), t(0.6), torch.tensor([True]), 1.0)
    ktot, _ = ipo_kto_objective(t(0.5), t(0.6), torch.tensor([True]), 1.0, real, lambda_real=0.3)
    assert ktot.item() == pytest.approx(k.item() + 0.3 * 0.9)
    assert nll_loss(t(1.0, 3.0))[0].item() == 2.0


def test_dpo_step_on_a_real_model_prefers_chosen():
    """One gradient step of Diffusion-DPO on the tiny CogVideoX lowers e(chosen) - e(rejected)."""
    from ipo_ray.policy import T2VPolicy
    from ipo_ray.codec import frames_to_unit
    from ipo_ray.world import render

    torch.manual_seed(0)
    policy = T2VPolicy.build_tiny(tiny_config().model).setup_finetune()
    prompt = ["a red square moves from left to right"] * 4
    xw = frames_to_unit(np.stack([render(prompt[0], s) for s in range(4)]))
    xl = frames_to_unit(np.stack([render(prompt[0], s, flaw="reversed") for s in range(4)]))
    cond = policy.encode_prompts(prompt)
    noise, tt = policy.sample_noise_and_t(4, torch.Generator().manual_seed(1))

    def margin():
        with torch.no_grad():
            return (policy.training_error(xw, cond, tt, noise) - policy.training_error(xl, cond, tt, noise)).mean().item()

    before = margin()
    opt = torch.optim.SGD(policy.transformer.parameters(), lr=1e-3)
    with policy.reference() as ref:
        rw = policy.training_error(xw, cond, tt, noise, model=ref).detach()
        rl = policy.training_error(xl, cond, tt, noise, model=ref).detach()
    loss, m = diffusion_dpo_loss(policy.training_error(xw, cond, tt, noise), policy.training_error(xl, cond, tt, noise),
                                 rw, rl, beta=100.0)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at the start
    loss.backward()
    opt.step()
    assert margin() < before


def test_row_noise_is_shared_by_row_and_high_noise_fraction_moves_t_up():
    from ipo_ray.objective import _row_noise

    ids = [f"r000-p{i:05d}-s{i}|r000-p{i:05d}-s{i + 1}" for i in range(400)]
    t0, n0 = _row_noise(ids, (2, 3, 4, 4), step=3, seed=0)
    t0b, n0b = _row_noise(ids, (2, 3, 4, 4), step=3, seed=0)
    assert torch.equal(t0, t0b) and torch.equal(n0, n0b)  # reproducible: chosen and rejected share them
    assert 0.4 < (t0 >= 500).float().mean() < 0.6  # uniform over [0, 1000)
    t1, n1 = _row_noise(ids, (2, 3, 4, 4), step=3, seed=0, high_noise_fraction=0.7)
    assert torch.equal(n1, n0)  # same noise, only t redrawn
    share_high = (t1 >= 500).float().mean().item()
    assert 0.78 < share_high < 0.92  # 0.3 * 0.5 + 0.7 = 0.85 expected
    assert int(t1.max()) < 1000 and int(t1.min()) >= 0
    t2, _ = _row_noise(ids, (2, 3, 4, 4), step=3, seed=0, high_noise_fraction=1.0)
    assert int(t2.min()) >= 500


def test_nll_units_beta_weighs_the_regularisers_against_the_preference_term():
    """``algo.nll_units: beta`` multiplies the DPO / KTO NLL weights by beta (not RWR's or SFT's), and the
    trainer's objective applies them: at the reference the DPO loss is log 2 and the rest is the NLL terms."""
    from ipo_ray.codec import frames_to_unit
    from ipo_ray.config import AlgoConfig
    from ipo_ray.objective import PreferenceStep
    from ipo_ray.policy import T2VPolicy
    from ipo_ray.rows import encode_latents
    from ipo_ray.world import render

    assert AlgoConfig(name="dpo", beta=5000, nll_units="beta").nll_weights() == \
        {"lambda_chosen": 1000.0, "lambda_real": 500.0, "kto_nll_desirable": 0.0}
    assert AlgoConfig(name="kto", beta=500, nll_units="beta", kto_nll_desirable=1.0).nll_weights()["kto_nll_desirable"] == 500
    assert AlgoConfig(name="sft", beta=5000, nll_units="beta").nll_weights()["lambda_real"] == 0.1
    assert AlgoConfig(name="dpo", beta=5000).nll_weights()["lambda_chosen"] == 0.2  # as written by default
    # The chosen row's gradient at the reference: DPO gives beta/2, the NLL lambda_chosen (per row, /B).
    e_w = t(0.1).requires_grad_()
    for units, share in (("mse", 0.2 / (2500 + 0.2)), ("beta", 1000 / (2500 + 1000))):
        w = AlgoConfig(name="dpo", beta=5000, nll_units=units).nll_weights()
        total, _ = ipo_dpo_objective(e_w, t(0.2), t(0.1), t(0.2), 5000.0, None, w["lambda_chosen"], w["lambda_real"])
        (g,) = torch.autograd.grad(total, e_w)
        assert w["lambda_chosen"] / g.item() == pytest.approx(share)

    torch.manual_seed(0)
    policy = T2VPolicy.build_tiny(tiny_config().model).setup_finetune()
    prompts = ["a red square moves from left to right", "a blue circle falls down"]
    x = frames_to_unit(np.stack([render(p, 0) for p in prompts])).numpy()
    xl = frames_to_unit(np.stack([render(p, 0, flaw="reversed") for p in prompts])).numpy()
    batch = {"row_id": ["a", "b"], "prompt": prompts, "latents": [encode_latents(v) for v in x],
             "latents_l": [encode_latents(v) for v in xl], "latent_shape": [list(x.shape[1:])] * 2,
             "latent_dtype": ["float32"] * 2}
    real = {"prompt": prompts, "frames": np.stack([render(p, 1) for p in prompts])}
    for units in ("mse", "beta"):
        cfg = tiny_config("algo.name=dpo", "algo.beta=5000", f"algo.nll_units={units}")
        loss, m = PreferenceStep(policy, policy.transformer, cfg, torch.device("cpu"))(batch, real, np.ones(2, bool), 0)
        w = cfg.algo.nll_weights()
        assert m["dpo_loss"] == pytest.approx(math.log(2), abs=1e-5)
        assert loss.item() == pytest.approx(math.log(2) + w["lambda_chosen"] * m["nll_chosen"]
                                            + w["lambda_real"] * m["nll_real"], rel=1e-5)
