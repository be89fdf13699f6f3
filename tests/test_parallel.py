"""FSDP (torch ``fully_shard``) over gloo on 2 CPU processes trains the real tiny transformer exactly
like one unsharded process, and its gathered state is what a weight sync ships."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp


def _train(policy, model, steps: int = 2) -> list[float]:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn((4, *policy.latent_shape()), generator=g)
    cond = policy.encode_prompts(["a red square falls down"] * 4)
    losses = []
    for _ in range(steps):
        noise, t = policy.sample_noise_and_t(4, generator=g)
        loss = policy.training_error(x0, cond, t, noise, model=model).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def _policy(base, mode):
    """The tiny base as the trainer sets it up: full, LoRA, or LoRA on a bf16 model (float32 adapters)."""
    from ipo_ray.policy import T2VPolicy

    cfg = None
    if mode == "lora-bf16":
        cfg = T2VPolicy.from_pretrained(base).cfg.model_copy(update={"finetune": "lora", "dtype": "bfloat16"})
    policy = T2VPolicy.from_pretrained(base, cfg)
    if mode == "lora":
        policy.cfg = policy.cfg.model_copy(update={"finetune": "lora"})
    torch.manual_seed(0)  # the LoRA init: the same on every rank (as the trainer seeds it)
    return policy.setup_finetune().train_params_float32()


def _fsdp_rank(rank, world, port, base, mode, out):
    from ipo_ray.parallel import full_model_state, is_sharded, optimizer_state, wrap_model
    from ipo_ray.trainer import _gather_state

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    policy = _policy(base, mode)
    model = wrap_model(policy.transformer, "fsdp", world,
                       compute_dtype=torch.bfloat16 if policy.cfg.dtype == "bfloat16" else None)
    assert is_sharded(model)
    losses = _train(policy, model)
    state = _gather_state(policy, model)
    full = full_model_state(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    optimizer_state(model, opt)  # collective: must not hang or raise on either rank
    out[rank] = {"losses": losses, "state": state, "full_keys": sorted(full)}
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("mode", ["full", "lora", "lora-bf16"])
def test_fsdp_on_two_cpu_processes_matches_one_process(tiny_base, mode):
    """lora-bf16: frozen bf16 weights and float32 adapters in one FSDP2 unit, gathered in bf16
    (``MixedPrecisionPolicy``), as the trainer wraps a bf16 model."""
    lora = mode != "full"
    tol = dict(rtol=2e-2, atol=2e-3) if mode == "lora-bf16" else dict(rtol=1e-3, atol=2e-4)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_fsdp_rank, args=(2, port, tiny_base, mode, out), nprocs=2, join=True)

    ref = _policy(tiny_base, mode)
    ref_losses = _train(ref, ref.transformer)
    expected = ref.policy_state()
    for rank in (0, 1):
        got = out[rank]
        # Same data on both ranks: averaged gradients equal one process's gradients.
        assert got["losses"] == pytest.approx(ref_losses, rel=tol["rtol"])
        assert set(got["state"]) == set(expected)
        for k, v in expected.items():
            torch.testing.assert_close(got["state"][k], v, **tol)  # Adam steps are ~1e-2
    if lora:
        assert all("lora_" in k for k in expected)
    # The gathered state loads into a fresh generator policy (what a weight sync does).
    gen = _policy(tiny_base, mode)
    before = {k: v.clone() for k, v in gen.policy_state().items()}
    gen.load_policy_state(out[0]["state"])
    after = gen.policy_state()
    for k, v in expected.items():
        torch.testing.assert_close(after[k], v, **tol)
    assert any(not torch.equal(before[k], after[k]) for k in expected)  # the sync changed the weights
