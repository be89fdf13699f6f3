"""Data-parallel wrapping of the policy transformer: DDP (through Ray Train) or FSDP (torch's
``fully_shard``, FSDP2).

Ray Train's ``prepare_model(parallel_strategy="fsdp")`` wraps with FSDP1 and refuses to run without
CUDA, so FSDP is applied here with ``fully_shard``: one unit per transformer block plus the root. It
runs over NCCL on GPUs and over gloo on CPUs (tested on 2 CPU processes), and the module keeps its
parameter names, so checkpoints and weight syncs look the same under DDP and FSDP.
"""

from __future__ import annotations

import torch


def _blocks(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated transformer blocks (also inside a peft wrapper)."""
    for m in module.modules():
        blocks = getattr(m, "transformer_blocks", None)
        if isinstance(blocks, torch.nn.ModuleList):
            return list(blocks)
    return []


def wrap_model(module: torch.nn.Module, strategy: str, world_size: int, *, find_unused: bool = False,
               compute_dtype: torch.dtype | None = None):
    """The model the optimizer trains: ``module`` itself on one worker; DDP or FSDP across workers.
    ``compute_dtype`` (FSDP): parameters are all-gathered and used in this dtype, gradients reduced in
    float32 (FSDP2 needs one dtype per unit; frozen bf16 weights and float32 LoRA weights mix)."""
    if world_size <= 1:
        return module
    if strategy == "ddp":
        import ray.train.torch

        return ray.train.torch.prepare_model(module, parallel_strategy="ddp",
                                             parallel_strategy_kwargs={"find_unused_parameters": find_unused})
    if strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32) if compute_dtype else None
        kw = {"mp_policy": mp} if mp is not None else {}
        for block in _blocks(module):
            fully_shard(block, **kw)
        fully_shard(module, **kw)
        return module
    raise ValueError(f"train.strategy: unknown {strategy!r}; allowed: ddp, fsdp")


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, unsharded, on every rank (a collective under FSDP)."""
    if not is_sharded(model):
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=False))
    return {k: v.detach().cpu().clone() for k, v in sd.items()}


def optimizer_state(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    """The optimizer state to checkpoint: full (unsharded) under FSDP, so any world size can resume."""
    if not is_sharded(model):
        return opt.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    if not is_sharded(model):
        opt.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, opt, optim_state_dict=state, options=StateDictOptions(full_state_dict=True))
