"""How much each term of the configured objective pushes the weights: the gradient norm of the
preference term (DPO or KTO) and of each NLL regulariser (λ1 on chosen rows, λ2 on real videos),
measured at the base (policy = reference) on rows made the loop's way from the base's own groups.

    python benchmarks/loss_terms.py                                  # the embedded default
    python benchmarks/loss_terms.py --set algo.lambda_chosen=1000    # what a weight would change
    python benchmarks/loss_terms.py --set algo.nll_units=beta        # IPO's weights in beta's units

IPO's weights (0.2, 0.1) are stated for log-likelihoods; here every term is a per-sample mean squared
error (DESIGN §3), and the DPO term's gradient carries β (5000), so the ratio this prints says
whether a regulariser can act at all. The numbers go to benchmarks/RESULTS.md ("Loss terms").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.learning_probe import sample_scores  # noqa: E402
from benchmarks.results import update_section  # noqa: E402
from ipo_ray.config import load_config  # noqa: E402
from ipo_ray.critic.base import label_for  # noqa: E402
from ipo_ray.losses import diffusion_dpo_loss, diffusion_kto_loss, nll_loss  # noqa: E402
from ipo_ray.objective import PreferenceStep, _latents  # noqa: E402
from ipo_ray.policy import seeds_for  # noqa: E402
from ipo_ray.rows import columns, rows_for  # noqa: E402
from ipo_ray.run_dir import load_base_policy  # noqa: E402
from ipo_ray.world import render, splits  # noqa: E402


def grad_norm(loss: torch.Tensor, params: list[torch.Tensor]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))


def term_norms(policy, cfg, batch: dict, real_frames: np.ndarray, real_prompts: list[str], seed: int = 0) -> dict:
    """Gradient norm of each weighted term on one batch; errors from the trainer's ``PreferenceStep.errors``
    (policy and reference, chosen and rejected sharing t and noise)."""
    algo, lam = cfg.algo, cfg.algo.nll_weights()
    gen = torch.Generator().manual_seed(seed)
    step = PreferenceStep(policy, policy.transformer, cfg, policy.device)
    x = _latents(batch["latents"], batch["latent_shape"], batch["latent_dtype"])
    n = x.shape[0]
    noise, t = policy.sample_noise_and_t(n, generator=gen)
    prompts = list(batch["prompt"])
    params = [p for p in policy.transformer.parameters() if p.requires_grad]
    out = {}
    if algo.name == "dpo":
        xl = _latents(batch["latents_l"], batch["latent_shape"], batch["latent_dtype"])
        err, ref = step.errors(torch.cat([x, xl]), prompts * 2, torch.cat([t, t]), torch.cat([noise, noise]), True)
        out["preference"] = grad_norm(diffusion_dpo_loss(err[:n], err[n:], ref[:n], ref[n:], algo.beta)[0], params)
        out["nll_chosen"] = grad_norm(lam["lambda_chosen"] * nll_loss(err[:n])[0], params)
    elif algo.name == "kto":
        err, ref = step.errors(x, prompts, t, noise, True)
        des = torch.as_tensor(np.asarray(batch["desirable"], bool))
        out["preference"] = grad_norm(diffusion_kto_loss(err, ref, des, algo.beta, algo.lambda_desirable,
                                                         algo.lambda_undesirable)[0], params)
    else:
        raise SystemExit(f"algo.name: {algo.name!r} has no preference term to compare (dpo, kto)")
    nr, tr = policy.sample_noise_and_t(len(real_prompts), generator=gen)
    err_r, _ = step.errors(step.encode_real(real_frames), real_prompts, tr, nr, False)
    out["nll_real"] = grad_norm(lam["lambda_real"] * nll_loss(err_r)[0], params)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="configs/world-tiny.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--prompts", type=int, default=32, help="train prompts whose base groups make the rows")
    ap.add_argument("--batches", type=int, default=4, help="batches of train.batch_size rows to average over")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    cfg = load_config(ROOT / args.config, args.overrides)
    torch.manual_seed(cfg.train.seed)
    policy = load_base_policy(cfg).setup_finetune()
    train = splits()["train"]
    rng = np.random.default_rng(cfg.seed)
    idx = rng.permutation(len(train))[:args.prompts]
    prompts = [train[i] for i in idx]
    k = cfg.sampling.num_per_prompt
    got = sample_scores(policy, prompts, [seeds_for(int(i), k, cfg.seed, 0) for i in idx], cfg)
    samples = [{"sample_id": f"{p}-{sd}", "group_id": p, "prompt": p, "round": 0, "policy_version": 0, "seed": sd,
                "score": sc, "label": label_for(sc), "critic_text": "", "latents": la.tobytes(),
                "latent_shape": list(la.shape)} for p, sd, sc, la in got]
    rows, _ = rows_for(samples, cfg.algo, "world")
    bs, rbs = cfg.train.batch_size, max(1, cfg.train.real_batch_size)
    norms = []
    for b in range(min(args.batches, len(rows) // bs)):
        batch = columns(rows[b * bs:(b + 1) * bs])
        rp = [train[j] for j in rng.integers(0, len(train), rbs)]
        frames = np.stack([render(p, int(rng.integers(1 << 30))) for p in rp])
        norms.append(term_norms(policy, cfg, batch, frames, rp, seed=b))
    if not norms:
        raise SystemExit(f"the base's groups on {args.prompts} prompts made {len(rows)} rows: fewer than one batch")
    mean = {key: float(np.mean([x[key] for x in norms])) for key in norms[0]}
    ratios = {key: mean[key] / mean["preference"] for key in mean if key != "preference"}
    a = cfg.algo
    cmd = "python benchmarks/loss_terms.py" + "".join(f" --set {o}" for o in args.overrides)
    w = a.nll_weights()
    line = (f"| `{cmd}` | {a.name}, β {a.beta:g}, λ1 {w['lambda_chosen']:g}, λ2 {w['lambda_real']:g} | {len(norms)} x {bs} rows"
            f" + {rbs} real | {mean['preference']:.3g} | "
            + " | ".join(f"{mean[key]:.3g} ({ratios[key]:.1e})" if key in mean else "-" for key in ("nll_chosen", "nll_real"))
            + " |")
    print(line)
    if not args.no_write:
        _write(line)
    return {"norms": mean, "ratios": ratios}


def _write(line: str) -> None:
    from benchmarks.results import read_section

    head = ["Gradient norm of each weighted term of the objective at the base (policy = reference), on rows made "
            "from the base's own groups (`benchmarks/loss_terms.py`); in brackets the ratio to the preference "
            "term's. A regulariser at 1e-4 of the preference term does nothing after gradient clipping.", "",
            "| command | objective | batches | preference term | NLL on chosen (ratio) | NLL on real videos (ratio) |",
            "|---|---|---|---|---|---|"]
    old = [x for x in (read_section("Loss terms") or "").splitlines() if x.startswith("| `")]
    cmd = line.split("|")[1]
    rows = [x for x in old if x.split("|")[1] != cmd] + [line]
    update_section("Loss terms", "\n".join(head + rows))


if __name__ == "__main__":
    main()
