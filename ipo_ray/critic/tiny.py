"""Tiny random critic models built from config, nothing downloaded: for CPU tests and CPU loop runs.

- :func:`build_tiny_qwen2vl`: a ``Qwen2VLForConditionalGeneration`` of a few thousand parameters, a
  word-level tokenizer over the critic prompts' and the world's words with the special tokens Qwen2-VL's
  processor and chat template use, a ``Qwen2VLImageProcessorPil`` sized for 16×16 frames, and Qwen2-VL's
  chat-template format. Loaded back through ``TransformersEngine.from_pretrained(path)`` like a real
  checkpoint. It answers at random: it tests plumbing, not judgement.
- :func:`build_tiny_clip`: a ``CLIPModel`` with a ``CLIPProcessor`` over the same kind of tokenizer.

``python -m ipo_ray.critic.tiny OUT_DIR [--clip]`` writes one.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

QWEN2VL_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                   "<|image_pad|>", "<|video_pad|>"]

# Qwen2-VL's chat format: a default system turn, then each message; images and videos become
# <|vision_start|><|image_pad|><|vision_end|> (the processor expands the pad to the image's tokens).
QWEN2VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def critic_words() -> list[str]:
    """Every word and punctuation run of the critic templates, the chat format and the world's prompts."""
    from ipo_ray.world import vocabulary

    from .prompts import DIMENSIONS, TEMPLATES

    text = " ".join([t.text for t in TEMPLATES.values()] + list(DIMENSIONS.values())
                    + [w for t in TEMPLATES.values() for ws in t.answers.values() for w in ws]
                    + ["system user assistant You are a helpful assistant Reason"] + list(vocabulary()))
    text = re.sub(r"\{\w+\}", " ", text)
    return sorted(set(re.findall(r"\w+|[^\w\s]+", text)))


def word_tokenizer(special: list[str], words: list[str], eos: str, pad: str, post_eos: bool = False):
    """A ``PreTrainedTokenizerFast`` over a word-level vocabulary (whitespace + punctuation splitting)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0}
    for w in list(words) + list(special):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    if post_eos:
        tok.post_processor = processors.TemplateProcessing(single=f"$A {eos}", special_tokens=[(eos, vocab[eos])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token=eos, pad_token=pad,
                                   additional_special_tokens=[s for s in special if s not in (eos, pad)])


def build_tiny_qwen2vl(out: str | Path, seed: int = 0, hidden: int = 32, patch_size: int = 4) -> Path:
    """Write a tiny random Qwen2-VL checkpoint (model, tokenizer, image processor, chat template) to ``out``."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = word_tokenizer(QWEN2VL_SPECIAL, critic_words(), eos="<|im_end|>", pad="<|endoftext|>")
    tok.chat_template = QWEN2VL_CHAT_TEMPLATE
    ids = tok.convert_tokens_to_ids
    heads = 2
    half = hidden // heads // 2  # rotary half-dim, split over (temporal, height, width) by M-RoPE
    section = [half - 2 * (half // 3), half // 3, half // 3]
    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                         num_attention_heads=heads, num_key_value_heads=1, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "mrope_section": section, "rope_theta": 10000.0},
                         bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"),
                         pad_token_id=ids("<|endoftext|>")),
        vision_config=dict(depth=1, embed_dim=max(16, hidden // 2), hidden_size=hidden, num_heads=2, mlp_ratio=2,
                           patch_size=patch_size, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    factor = patch_size * 2
    image_processor = Qwen2VLImageProcessorPil(patch_size=patch_size, merge_size=2, temporal_patch_size=2,
                                               min_pixels=factor * factor, max_pixels=(4 * factor) ** 2)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    image_processor.save_pretrained(out)
    (out / "chat_template.jinja").write_text(QWEN2VL_CHAT_TEMPLATE)
    try:  # with torchvision (GPU machines), also the full processor, so AutoProcessor and vLLM can load it
        from transformers import Qwen2VLProcessor
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

        video = Qwen2VLVideoProcessor(patch_size=patch_size, merge_size=2, temporal_patch_size=2,
                                      min_pixels=factor * factor, max_pixels=(4 * factor) ** 2 * 16)
        Qwen2VLProcessor(image_processor=image_processor, tokenizer=tok, video_processor=video,
                         chat_template=QWEN2VL_CHAT_TEMPLATE).save_pretrained(out)
    except ImportError:
        pass
    return out


def build_tiny_clip(out: str | Path, seed: int = 0, image_size: int = 16) -> Path:
    """Write a tiny random CLIP checkpoint (``CLIPModel`` + ``CLIPProcessor``) to ``out``."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    special = ["<|startoftext|>", "<|endoftext|>"]
    tok = word_tokenizer(special, critic_words(), eos="<|endoftext|>", pad="<|endoftext|>", post_eos=True)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.eos_token_id),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=image_size, patch_size=4),
        projection_dim=8)
    torch.manual_seed(seed)
    CLIPModel(cfg).eval().save_pretrained(out)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                            crop_size={"height": image_size, "width": image_size})
    CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(out)
    return out


if __name__ == "__main__":  # pragma: no cover
    args = sys.argv[1:]
    if not args:
        sys.exit("usage: python -m ipo_ray.critic.tiny OUT_DIR [--clip]")
    path = (build_tiny_clip if "--clip" in args else build_tiny_qwen2vl)([a for a in args if a != "--clip"][0])
    print(path)
