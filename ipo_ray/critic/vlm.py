"""VLM engines behind one interface: ``Engine.generate(requests) -> replies`` (text + first-token log-probs).

- :class:`TransformersEngine`: any image-text-to-text model through ``AutoProcessor`` and
  ``AutoModelForImageTextToText`` (Qwen2-VL, Qwen2.5-VL, ...); CPU or one GPU. A video's sampled frames go
  through the processor's *image* path, one image per frame, in order: no video decoder and no
  torchvision needed. When a checkpoint's ``AutoProcessor`` cannot be built because its video processor
  needs torchvision, Qwen2-VL-family checkpoints get :func:`frames_processor` (the same Qwen2-VL
  processor, without its video sub-processor).
- :class:`VLLMEngine`: ``vllm.LLM`` with multimodal *video* input (one ``[F, H, W, 3]`` uint8 array per
  video slot), ``tensor_parallel_size`` from the config, all requests of a call submitted together (vLLM
  batches them continuously), top-k log-probs of the first generated token. vllm is imported only here.

The protocols (what is asked, how answers become scores) live in ``ipo_ray.critic.protocols``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .base import exc_line
from .prompts import answer_token_ids

# Model types whose processor the image-only fallback reproduces (same image tokens and chat template).
FRAME_PROCESSOR_TYPES = ("qwen2_vl", "qwen2_5_vl")


@dataclass
class Request:
    """One question: ``parts`` are text (str) and video slots (int index into ``videos``, frames ready)."""

    parts: list
    videos: list[np.ndarray]


@dataclass
class Reply:
    text: str
    logprobs: object = None  # first generated token: {token id: log-prob} or a dense array; None if unknown


class Engine(ABC):
    name = "engine"
    tokenizer = None

    def __init__(self, max_new_tokens: int = 64, batch_size: int = 8):
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self._ids: dict = {}

    def max_new_tokens_for(self, protocol: str) -> int:
        """The binary prompt wants one word; the others a verdict then a reason."""
        return min(self.max_new_tokens, 8) if protocol == "binary" else self.max_new_tokens

    def answer_ids(self, answers: dict[str, tuple[str, ...]]):
        key = tuple(sorted((k, tuple(v)) for k, v in answers.items()))
        if key not in self._ids:
            self._ids[key] = answer_token_ids(self.tokenizer, answers) if self.tokenizer is not None else None
        return self._ids[key]

    @abstractmethod
    def generate(self, requests: list[Request], max_new_tokens: int) -> list[Reply]:
        """Greedy replies, in order."""


def make_engine(cfg) -> Engine:
    """The engine of ``CriticConfig`` (backend transformers or vllm)."""
    if cfg.backend == "transformers":
        return TransformersEngine.from_pretrained(cfg.model, revision=cfg.revision, max_new_tokens=cfg.max_new_tokens,
                                                  batch_size=cfg.batch_size)
    if cfg.backend == "vllm":
        return VLLMEngine(cfg.model, revision=cfg.revision, tensor_parallel_size=cfg.tensor_parallel_size,
                          max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                          gpu_memory_utilization=cfg.gpu_memory_utilization)
    raise ValueError(f"critic.backend: {cfg.backend!r} is not a VLM engine; allowed: transformers, vllm")


def _content(req: Request, video_item: dict) -> list[dict]:
    """Chat-message content of a request: text parts, and ``video_item`` entries for each frame / video."""
    out = []
    for p in req.parts:
        out.append({"type": "text", "text": p} if isinstance(p, str) else dict(video_item))
    return out


# --- transformers ----------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _frames_processor_class():
    from transformers import Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class Qwen2VLFramesProcessor(Qwen2VLProcessor):
        """Qwen2-VL's processor without the video sub-processor (which needs torchvision): images only."""

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return Qwen2VLFramesProcessor


def frames_processor(image_processor, tokenizer, chat_template: str | None = None):
    """An image-only Qwen2-VL processor from its parts (used when torchvision is not installed)."""
    return _frames_processor_class()(image_processor=image_processor, tokenizer=tokenizer,
                                     chat_template=chat_template or tokenizer.chat_template)


def _chat_template_file(path: str) -> str | None:
    p = Path(path)
    if (p / "chat_template.jinja").is_file():
        return (p / "chat_template.jinja").read_text()
    if (p / "chat_template.json").is_file():
        import json

        return json.loads((p / "chat_template.json").read_text()).get("chat_template")
    return None


def load_processor(path: str, revision: str | None = None):
    """``AutoProcessor`` of a checkpoint; without torchvision, the image-only Qwen2-VL processor."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(path, revision=revision)
    except ImportError as exc:
        from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

        model_type = AutoConfig.from_pretrained(path, revision=revision).model_type
        if model_type not in FRAME_PROCESSOR_TYPES:
            raise ValueError(f"critic.model: the processor of {path!r} ({model_type}) cannot be built here: {exc_line(exc)}; "
                             f"install torchvision, or use a model of type {', '.join(FRAME_PROCESSOR_TYPES)}") from None
        tok = AutoTokenizer.from_pretrained(path, revision=revision)
        template = tok.chat_template or _chat_template_file(path)
        if not template:
            raise ValueError(f"critic.model: {path!r} has no chat template (tokenizer or chat_template.jinja)") from None
        return frames_processor(AutoImageProcessor.from_pretrained(path, revision=revision), tok, template)


class TransformersEngine(Engine):
    """Generation with a transformers VLM; frames fed as images; log-probs from the first step's logits."""

    name = "transformers"

    def __init__(self, model, processor, max_new_tokens: int = 64, batch_size: int = 8):
        super().__init__(max_new_tokens, batch_size)
        self.model, self.processor = model.eval(), processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.tokenizer.padding_side = "left"  # batched generation continues every row at the same position
        self.device = next(model.parameters()).device

    @classmethod
    def from_pretrained(cls, path: str, revision: str | None = None, **kw) -> "TransformersEngine":
        import torch
        from transformers import AutoModelForImageTextToText

        cuda = torch.cuda.is_available()
        try:
            model = AutoModelForImageTextToText.from_pretrained(
                path, revision=revision, dtype=torch.bfloat16 if cuda else torch.float32)
        except (OSError, ValueError) as exc:
            raise ValueError(f"critic.model: cannot load {path!r} as an image-text-to-text model: "
                             f"{exc_line(exc)}") from None
        return cls(model.to("cuda" if cuda else "cpu"), load_processor(path, revision), **kw)

    def encode(self, requests: list[Request]):
        """Chat texts, the flat list of frames (one image per frame, in slot order) and the processor's tensors."""
        texts, images = [], []
        for req in requests:
            content = []
            for p in req.parts:
                if isinstance(p, str):
                    content.append({"type": "text", "text": p})
                else:
                    content += [{"type": "image"}] * len(req.videos[p])
                    images += list(req.videos[p])
            texts.append(self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                            add_generation_prompt=True, tokenize=False))
        inputs = self.processor(text=texts, images=images or None, return_tensors="pt", padding=True)
        return texts, images, inputs

    def generate(self, requests, max_new_tokens):
        import torch

        replies: list[Reply] = []
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        for start in range(0, len(requests), self.batch_size):
            _, _, inputs = self.encode(requests[start:start + self.batch_size])
            inputs = inputs.to(self.device)
            with torch.inference_mode():
                out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                          output_logits=True, return_dict_in_generate=True, pad_token_id=pad)
            first = torch.log_softmax(out.logits[0].float(), dim=-1).cpu().numpy()
            new = out.sequences[:, inputs["input_ids"].shape[1]:]
            for k, text in enumerate(self.tokenizer.batch_decode(new, skip_special_tokens=True)):
                replies.append(Reply(text.strip(), first[k]))
        return replies


# --- vLLM ------------------------------------------------------------------------------------------------

class VLLMEngine(Engine):
    """``vllm.LLM`` with video input; GPU. ``llm_kwargs`` go to ``vllm.LLM`` (e.g. ``max_model_len``).
    vLLM batches continuously, so every request of a call goes in one ``generate`` (``batch_size``
    applies to the transformers engine only)."""

    name = "vllm"

    def __init__(self, model: str, tensor_parallel_size: int = 1, max_new_tokens: int = 64, batch_size: int = 8,
                 revision: str | None = None, gpu_memory_utilization: float = 0.8, seed: int = 0,
                 top_logprobs: int = 20, **llm_kwargs):
        super().__init__(max_new_tokens, batch_size)
        try:
            import vllm
        except ImportError:
            raise ImportError("critic.backend: 'vllm' needs the vllm package on the critic's GPU nodes "
                              "(pip install 'ipo-ray[gpu]')") from None
        llm_kwargs.setdefault("max_model_len", 16384)
        llm_kwargs.setdefault("limit_mm_per_prompt", {"video": 2})
        self.llm = vllm.LLM(model=model, revision=revision, tensor_parallel_size=tensor_parallel_size,
                            gpu_memory_utilization=gpu_memory_utilization, seed=seed, **llm_kwargs)
        self.sampling_params = vllm.SamplingParams
        self.tokenizer = self.llm.get_tokenizer()
        self.top_logprobs = top_logprobs
        try:  # the processor's chat template knows the video placeholders; the tokenizer's usually does too
            from transformers import AutoProcessor

            self.templater = AutoProcessor.from_pretrained(model, revision=revision)
        except Exception:  # noqa: BLE001
            self.templater = self.tokenizer

    def prompt(self, req: Request) -> dict:
        text = self.templater.apply_chat_template([{"role": "user", "content": _content(req, {"type": "video"})}],
                                                  add_generation_prompt=True, tokenize=False)
        videos = [req.videos[p] for p in req.parts if not isinstance(p, str)]
        return {"prompt": text, "multi_modal_data": {"video": videos if len(videos) > 1 else videos[0]}}

    def generate(self, requests, max_new_tokens):
        params = self.sampling_params(temperature=0.0, max_tokens=max_new_tokens, logprobs=self.top_logprobs)
        outputs = self.llm.generate([self.prompt(r) for r in requests], params, use_tqdm=False)
        replies = []
        for o in outputs:
            c = o.outputs[0]
            first = {int(t): float(lp.logprob) for t, lp in c.logprobs[0].items()} if c.logprobs else None
            replies.append(Reply(c.text.strip(), first))
        return replies
