"""The vLLM backend on a GPU. Runs only where CUDA and vllm are present (skipped otherwise, never faked).

The model is ``IPO_RAY_TEST_VLM`` (a local path or hub id of a vLLM-supported VLM, e.g.
Qwen/Qwen2.5-VL-3B-Instruct), or else a tiny random Qwen2-VL written by ``ipo_ray.critic.tiny``.
"""

import os

import pytest

vllm = pytest.importorskip("vllm")
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("the vllm backend needs CUDA", allow_module_level=True)

from ipo_ray.config import CriticConfig  # noqa: E402
from ipo_ray.critic import make_critic  # noqa: E402
from ipo_ray.critic.vlm import VLLMEngine  # noqa: E402
from ipo_ray.world import render  # noqa: E402

PROMPT = "a red square falls down"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    if os.environ.get("IPO_RAY_TEST_VLM"):
        return os.environ["IPO_RAY_TEST_VLM"]
    from ipo_ray.critic.tiny import build_tiny_qwen2vl

    return str(build_tiny_qwen2vl(tmp_path_factory.mktemp("vllm") / "tiny-qwen2vl", hidden=128, patch_size=14))


@pytest.mark.gpu
def test_vllm_critic_judges_a_group_with_video_input(model):
    critic = make_critic(CriticConfig(backend="vllm", model=model, protocol="pairwise", num_frames=8,
                                      max_new_tokens=16, tensor_parallel_size=1, gpu_memory_utilization=0.5))
    assert isinstance(critic.engine, VLLMEngine)
    videos = [render(PROMPT, 0, height=64, width=64), render(PROMPT, 1, height=64, width=64, flaw="frozen"),
              render(PROMPT, 2, height=64, width=64)]
    js = critic.judge_group(PROMPT, videos)
    assert len(js) == 3 and all(0.0 <= j.score <= 1.0 for j in js)
    s = critic.summary()
    assert s["pairs"] == 3 and s["answers"] == 6  # both orders of every pair, in one batched generate call
    critic.protocol, critic.point_protocol = "binary", "binary"
    points = critic.judge_group(PROMPT, videos)
    assert all(0.0 <= j.score <= 1.0 for j in points)
    assert critic.stats["logprob_scores"] + critic.stats["text_scores"] + critic.stats["unparsable"] == critic.stats["answers"]
