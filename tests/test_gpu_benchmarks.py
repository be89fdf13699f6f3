"""The real-size GPU benchmarks (benchmarks/gpu_realsize.py, benchmarks/gpu_critic.py) run end to end
at a tiny size on the CPU, through the same code paths, so they cannot rot between GPU sessions."""

import math

from benchmarks import gpu_critic, gpu_realsize


def test_realsize_benchmark_runs_every_section_in_bfloat16(tmp_path):
    res = gpu_realsize.main(["--size", "tiny", "--sample-steps", "5", "--train-steps", "2",
                             "--out", str(tmp_path / "r.json")])
    assert (tmp_path / "r.json").is_file()
    assert res["latent_shape"] == [3, 16, 8, 8] and res["video"] == [9, 64, 64]
    assert all(s["seconds"] > 0 for s in res["sampling"])
    assert set(res["vae"]) == {f"{k}_tiling_{t}" for k in ("decode", "encode") for t in (True, False)}
    # LoRA on a bf16 model: float32 adapters over frozen bf16 weights (train_params_float32)
    assert res["lora"]["trainable_dtypes"] == ["torch.float32"] and res["lora"]["frozen_dtypes"] == ["torch.bfloat16"]
    assert [(t["gradient_checkpointing"], t["pairs"], t["real_video_nll"], t["real_latent_cache"]) for t in res["train"]] == \
        [(False, 1, False, None), (True, 1, False, None), (True, 2, False, None), (True, 1, True, 256), (True, 1, True, 0)]
    assert all(math.isfinite(t["loss"]) and t["s_per_pair"] > 0 for t in res["train"] + [res["full_finetune"]])
    assert res["full_finetune"]["finetune"] == "full"
    assert res["weight_sync"]["tensors"] > 0 and res["weight_sync"]["bytes"] > 0


def test_critic_benchmark_judges_a_group_both_ways(tmp_path):
    res = gpu_critic.main(["--size", "tiny", "--k", "3", "--max-new-tokens", "4", "--out", str(tmp_path / "c.json")])
    pw, bi = res["pairwise"], res["binary"]
    assert pw["requests_per_group"] == 6 and bi["requests_per_group"] == 3
    assert pw["frames_per_video"] == 16 and bi["frames_per_video"] == 8  # IPO 16 frames, Furuta 8
    assert pw["prompt_tokens_per_request"] > bi["prompt_tokens_per_request"] > 0
    assert pw["seconds_per_group"] > 0 and bi["seconds_per_group"] > 0
