import numpy as np
import pytest
import torch

from ipo_ray.codec import frames_to_unit, unit_to_frames
from ipo_ray.policy import T2VPolicy, seeds_for
from ipo_ray.world import render

from .conftest import tiny_config

P = ["a red square moves from left to right", "a blue circle grows"]


@pytest.fixture()
def policy():
    torch.manual_seed(0)
    return T2VPolicy.build_tiny(tiny_config().model)


def test_tiny_world_model_uses_the_real_diffusers_classes(policy):
    from diffusers import CogVideoXTransformer3DModel
    from transformers import PreTrainedTokenizerFast, T5EncoderModel

    assert isinstance(policy.transformer, CogVideoXTransformer3DModel)
    assert isinstance(policy.text_encoder, T5EncoderModel)
    assert isinstance(policy.tokenizer, PreTrainedTokenizerFast)
    ids = policy.tokenizer(P[0]).input_ids
    assert policy.tokenizer.unk_token_id not in ids and ids[-1] == policy.tokenizer.eos_token_id


def test_world_tokenizer_tells_the_horizontal_directions_apart_by_token_not_by_order():
    from ipo_ray.tokenizer import build_world_tokenizer

    tok = build_world_tokenizer()
    l2r = tok("a red square moves from left to right").input_ids
    r2l = tok("a red square moves from right to left").input_ids
    assert sorted(l2r) != sorted(r2l) and len(l2r) == len(r2l) == 7
    assert tok("A  Red square MOVES from left   to right").input_ids == l2r
    assert tok.unk_token_id not in l2r + r2l


def test_pretraining_from_an_older_tokenizer_keeps_word_rows_and_adds_the_phrases(policy):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from ipo_ray.pretrain import adopt_world_tokenizer
    from ipo_ray.tokenizer import build_world_tokenizer
    from ipo_ray.world.grammar import vocabulary

    # The tokenizer the first committed base was saved with: words only.
    old = Tokenizer(models.WordLevel({t: i for i, t in enumerate(["<pad>", "</s>", "<unk>"] + vocabulary())},
                                     unk_token="<unk>"))
    old.pre_tokenizer = pre_tokenizers.Whitespace()
    old.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    policy.tokenizer = PreTrainedTokenizerFast(tokenizer_object=old, pad_token="<pad>", eos_token="</s>",
                                               unk_token="<unk>", model_max_length=16)
    policy.text_encoder.resize_token_embeddings(len(vocabulary()) + 3, mean_resizing=False)
    before = policy.encode_prompts(["a red square falls down"])
    torch.manual_seed(1)
    adopt_world_tokenizer(policy, log=lambda *_: None)
    assert policy.tokenizer.get_vocab() == build_world_tokenizer().get_vocab()
    assert policy.text_encoder.get_input_embeddings().weight.shape[0] == len(policy.tokenizer.get_vocab())
    assert torch.equal(policy.encode_prompts(["a red square falls down"]), before)  # words keep their rows
    a, b = policy.encode_prompts(["a red square moves from left to right", "a red square moves from right to left"])
    assert not torch.allclose(a, b)


def test_codec_round_trip():
    v = np.stack([render(P[0], 1), render(P[1], 2)])
    assert np.array_equal(unit_to_frames(frames_to_unit(v)), v)


def test_sampling_is_deterministic_per_seed(policy):
    a, la = policy.sample(P, [1, 2], steps=3)
    b, lb = policy.sample(P, [1, 2], steps=3)
    c, _ = policy.sample(P, [3, 2], steps=3)
    assert a.shape == (2, 8, 16, 16, 3) and a.dtype == np.uint8 and la.shape == (2, 8, 3, 16, 16)
    assert np.array_equal(a, b) and torch.equal(la, lb)
    assert not np.array_equal(a[0], c[0])
    # The sample of seed 2 does not depend on what else is in the batch.
    assert np.abs(a[1].astype(int) - c[1].astype(int)).max() <= 1
    assert len(set(seeds_for(5, 8, 0, 1))) == 8 and seeds_for(5, 8, 0, 1) == seeds_for(5, 8, 0, 1)
    assert seeds_for(5, 8, 0, 1) != seeds_for(5, 8, 0, 2)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_training_error_is_per_sample(prediction_type):
    torch.manual_seed(0)
    pol = T2VPolicy.build_tiny(tiny_config(f"model.prediction_type={prediction_type}").model)
    x0 = frames_to_unit(np.stack([render(P[0], s) for s in range(3)]))
    cond = pol.encode_prompts([P[0]] * 3)
    noise, t = pol.sample_noise_and_t(3, torch.Generator().manual_seed(0))
    err = pol.training_error(x0, cond, t, noise)
    assert err.shape == (3,)
    # Equals the mean squared error against the scheduler's target, computed by hand.
    xt = pol.scheduler.add_noise(x0, noise, t)
    pred = pol.transformer(hidden_states=xt, encoder_hidden_states=cond, timestep=t).sample
    target = noise if prediction_type == "epsilon" else pol.scheduler.get_velocity(x0, noise, t)
    assert torch.allclose(err, ((pred - target) ** 2).mean(dim=(1, 2, 3, 4)), atol=1e-6)
    # A batch of one gives the same error: nothing is reduced across the batch.
    assert torch.allclose(pol.training_error(x0[:1], cond[:1], t[:1], noise[:1]), err[:1], atol=1e-5)


def test_lora_reference_is_the_base_with_adapters_disabled():
    torch.manual_seed(0)
    cfg = tiny_config("model.finetune=lora").model
    pol = T2VPolicy.build_tiny(cfg)
    x0 = frames_to_unit(np.stack([render(P[0], 0)]))
    cond = pol.encode_prompts(P[:1])
    noise, t = pol.sample_noise_and_t(1, torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = pol.training_error(x0, cond, t, noise).clone()
    pol.setup_finetune()
    assert pol.is_lora
    trainable = [n for n, p in pol.transformer.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():
        for n, p in pol.transformer.named_parameters():
            if "lora_B" in n:
                p.add_(0.05)
        with pol.reference() as ref:
            ref_err = pol.training_error(x0, cond, t, noise, model=ref)
        tuned = pol.training_error(x0, cond, t, noise)
    assert torch.allclose(ref_err, base, atol=1e-6)
    assert not torch.allclose(tuned, base, atol=1e-4)
    state = pol.policy_state()
    assert state and all("lora" in k for k in state)

    # Moving the reference (IPO, every round) with LoRA: the reference becomes the tuned policy
    # while the base stays shared; later training moves the policy, not the reference, and a
    # backward through a policy forward taken before the reference forward is unaffected.
    pol.move_reference()
    with torch.no_grad():
        with pol.reference() as ref:
            assert torch.allclose(pol.training_error(x0, cond, t, noise, model=ref), tuned, atol=1e-6)
    err = pol.training_error(x0, cond, t, noise)
    with torch.no_grad():
        with pol.reference() as ref:
            pol.training_error(x0, cond, t, noise, model=ref)
    err.sum().backward()
    grads = {n: p.grad.clone() for n, p in pol.transformer.named_parameters() if p.grad is not None}
    pol.transformer.zero_grad()
    pol.training_error(x0, cond, t, noise).sum().backward()
    assert grads and all(torch.allclose(grads[n], p.grad) for n, p in pol.transformer.named_parameters() if n in grads)
    with torch.no_grad():
        for n, p in pol.transformer.named_parameters():
            if "lora_B" in n:
                p.add_(0.05)
        with pol.reference() as ref:
            assert torch.allclose(pol.training_error(x0, cond, t, noise, model=ref), tuned, atol=1e-6)
        assert not torch.allclose(pol.training_error(x0, cond, t, noise), tuned, atol=1e-4)
    # What a weight sync ships is still only the adapters.
    assert set(pol.policy_state()) == set(state)


def test_full_finetune_reference_is_frozen_and_moves(policy):
    policy.setup_finetune()
    assert not any(p.requires_grad for p in policy.reference_model.parameters())
    with torch.no_grad():
        next(policy.transformer.parameters()).add_(1.0)
    p0 = next(policy.reference_model.parameters())
    assert not torch.equal(p0, next(policy.transformer.parameters()))
    policy.move_reference()
    assert torch.equal(next(policy.reference_model.parameters()), next(policy.transformer.parameters()))


def test_save_load_round_trip(policy, tmp_path):
    policy.save(tmp_path / "ckpt")
    for sub in ("transformer", "text_encoder", "tokenizer", "scheduler"):
        assert (tmp_path / "ckpt" / sub).is_dir()
    loaded = T2VPolicy.from_pretrained(str(tmp_path / "ckpt"))
    a, _ = policy.sample(P, [4, 5], steps=3)
    b, _ = loaded.sample(P, [4, 5], steps=3)
    assert np.array_equal(a, b)
    assert loaded.cfg.tiny == policy.cfg.tiny


def test_a_checkpoint_with_another_diffusers_scheduler_samples_with_it(policy, tmp_path):
    """DPM-Solver++ (no DDIM eta argument) saved with the checkpoint is loaded and stepped."""
    from diffusers import DPMSolverMultistepScheduler

    policy.scheduler = DPMSolverMultistepScheduler.from_config(policy.scheduler.config)
    policy.save(tmp_path / "dpm")
    loaded = T2VPolicy.from_pretrained(str(tmp_path / "dpm"))
    assert type(loaded.scheduler).__name__ == "DPMSolverMultistepScheduler"
    a, _ = loaded.sample(P, [4, 5], steps=4)
    b, _ = loaded.sample(P, [4, 5], steps=4)
    assert np.array_equal(a, b) and a.shape == (2, 8, 16, 16, 3)


def test_policy_state_round_trip(policy):
    other = T2VPolicy.build_tiny(tiny_config().model)
    other.text_encoder = policy.text_encoder  # frozen and shared: a weight sync ships the transformer only
    a0, _ = other.sample(P[:1], [9], steps=2)
    other.load_policy_state(policy.policy_state())
    a, _ = policy.sample(P[:1], [9], steps=2)
    b, _ = other.sample(P[:1], [9], steps=2)
    assert np.array_equal(a, b) and not np.array_equal(a, a0)


def test_unknown_checkpoint_needs_a_config(tmp_path):
    with pytest.raises(ValueError, match="not an ipo-ray checkpoint"):
        T2VPolicy.from_pretrained(str(tmp_path))


def test_bfloat16_models_train_float32_weights_under_autocast(policy, tmp_path):
    """model.dtype=bfloat16 loads every module in bf16; the trainable (LoRA) weights become float32 so
    an Adam step of lr 1e-5 is not rounded away (a bf16 weight near 0.02 cannot move by 1e-5)."""
    policy.save(tmp_path / "ckpt")
    cfg = tiny_config("model.finetune=lora", "model.dtype=bfloat16", "model.gradient_checkpointing=true").model
    pol = T2VPolicy.from_pretrained(str(tmp_path / "ckpt"), cfg)
    assert pol.cfg.dtype == "bfloat16" and pol.cfg.gradient_checkpointing  # the run's choices, not the checkpoint's
    assert pol.text_encoder.dtype == torch.bfloat16 and pol.transformer.dtype == torch.bfloat16
    pol.setup_finetune().train_params_float32()
    assert pol.trainable_base().gradient_checkpointing
    trainable = {n: p for n, p in pol.transformer.named_parameters() if p.requires_grad}
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values())
    assert all(p.dtype == torch.bfloat16 for p in pol.transformer.parameters() if not p.requires_grad)

    with torch.no_grad():  # adapters of a trained size: every lora_B weight 0.02
        for n, p in trainable.items():
            if "lora_B" in n:
                p.fill_(0.02)
    x0 = frames_to_unit(np.stack([render(P[0], 0), render(P[1], 1)]))
    noise, t = pol.sample_noise_and_t(2, torch.Generator().manual_seed(0))
    pol.transformer.train()
    err = pol.training_error(x0, pol.encode_prompts(P), t, noise)
    assert err.dtype == torch.float32 and err.shape == (2,)
    err.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trainable.values())

    w = next(p for n, p in trainable.items() if "lora_B" in n)
    before = w.detach().clone()
    opt = torch.optim.AdamW([w], lr=1e-5, weight_decay=0.0)
    opt.step()
    assert (w.detach() != before).float().mean() > 0.9  # float32: (nearly) every element moved by ~1e-5
    bf = before.to(torch.bfloat16)
    assert (bf - 1e-5 * torch.sign(w.grad).to(torch.bfloat16) == bf).float().mean() > 0.9  # bf16: the step is lost


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    pols = []
    for gc in (False, True):
        torch.manual_seed(0)
        pol = T2VPolicy.build_tiny(tiny_config("model.finetune=lora", f"model.gradient_checkpointing={gc}").model)
        pols.append(pol.setup_finetune())
    x0 = frames_to_unit(np.stack([render(P[0], 0)]))
    noise, t = pols[0].sample_noise_and_t(1, torch.Generator().manual_seed(1))
    grads = []
    for pol in pols:
        with torch.no_grad():  # a non-zero adapter, so lora_A gets a gradient too
            for n, p in pol.transformer.named_parameters():
                if "lora_B" in n:
                    p.fill_(0.01)
        pol.transformer.train()
        pol.training_error(x0, pol.encode_prompts(P[:1]), t, noise).sum().backward()
        grads.append({n: p.grad for n, p in pol.transformer.named_parameters() if p.requires_grad})
    assert pols[1].trainable_base().gradient_checkpointing and not pols[0].trainable_base().gradient_checkpointing
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])


def test_real_clips_are_vae_encoded_once_and_their_latents_reused():
    """The real-video NLL term: a VAE model encodes each real clip once (train.real_latent_cache clips
    kept, least recently used dropped); 0 encodes every step; pixel-space models never cache."""
    from benchmarks.gpu_realsize import build
    from ipo_ray.objective import PreferenceStep

    torch.manual_seed(0)
    policy, cfg = build("tiny", torch.device("cpu"), torch.float32)
    frames = policy.codec.decode(torch.randn((3, *policy.latent_shape())))
    step = PreferenceStep(policy, policy.transformer, cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"real_latent_cache": 2})}), torch.device("cpu"))
    z1 = step.encode_real(frames[:2])
    z2 = step.encode_real(frames[:2])
    assert step.real_encoded == 2 and torch.equal(z1, z2) and z1.shape == (2, *policy.latent_shape())
    step.encode_real(frames[2:])  # a third clip: encoded; the least recently used one is dropped
    assert step.real_encoded == 3 and len(step.real_cache) == 2
    step.encode_real(frames[1:3])
    assert step.real_encoded == 3
    step.encode_real(frames[:1])
    assert step.real_encoded == 4
    off = PreferenceStep(policy, policy.transformer, cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"real_latent_cache": 0})}), torch.device("cpu"))
    off.encode_real(frames[:2])
    off.encode_real(frames[:2])
    assert off.real_encoded == 4 and not off.real_cache
    pixel = PreferenceStep(T2VPolicy.build_tiny(tiny_config().model), None, tiny_config(), torch.device("cpu"))
    pixel.encode_real(np.stack([render(P[0], 0)]))
    assert not pixel.real_cache


def test_sampling_dtype_loads_the_sampling_copies_only_in_bfloat16(policy, tmp_path):
    """``sampling.dtype=bfloat16``: generator actors, eval and serve load the base in bf16 (deterministic per
    seed, the trained float32 weights load into it), the trainer's copy keeps ``model.dtype``; the base
    evaluation's cache key tells the two apart and a float32 plan keeps the key it had before the field."""
    from ipo_ray.run_dir import RunDir, load_base_policy
    from jobs.report import base_eval_key

    policy.save(tmp_path / "ckpt")
    cfg = tiny_config("sampling.dtype=bfloat16", base=str(tmp_path / "ckpt"))
    sampler, trainer = load_base_policy(cfg, sampling=True), load_base_policy(cfg)
    assert sampler.transformer.dtype == torch.bfloat16 and sampler.text_encoder.dtype == torch.bfloat16
    assert trainer.transformer.dtype == torch.float32 and trainer.cfg.dtype == "float32"
    a, _ = sampler.sample(P, [3, 4], steps=2)
    b, _ = sampler.sample(P, [3, 4], steps=2)
    assert np.array_equal(a, b) and a.dtype == np.uint8
    sampler.load_policy_state(trainer.policy_state())  # a float32 version loads into the bf16 copy
    ref, _ = trainer.sample(P, [3, 4], steps=2)
    assert np.abs(a.astype(int) - ref.astype(int)).mean() < 8  # the same videos up to bf16 rounding

    RunDir(tmp_path / "run").write_config(cfg)
    assert RunDir(tmp_path / "run").load_policy("base")[0].transformer.dtype == torch.bfloat16
    keys = {d: base_eval_key(tiny_config(f"sampling.dtype={d}", base=str(tmp_path / "ckpt")), P, [0, 1])
            for d in ("null", "float32", "bfloat16")}  # null: model.dtype, float32 here
    assert keys["null"] == keys["float32"] != keys["bfloat16"]
    with pytest.raises(ValueError, match="sampling.dtype"):
        tiny_config("sampling.dtype=float16")
