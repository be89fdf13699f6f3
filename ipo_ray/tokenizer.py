"""A word-level tokenizer for the world's vocabulary, built locally (no downloads).

It is a real ``transformers.PreTrainedTokenizerFast`` so it saves, loads and pads like the T5
tokenizer a real CogVideoX checkpoint ships. The two horizontal directions are one token each
(``left-to-right``, ``right-to-left``): as separate words they are the same bag of words in another
order, and the tiny text encoder plus transformer never learned that order (measured: the base drew
the same trajectory for both prompts on every seed; benchmarks/RESULTS.md, "Base model").
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from .world.grammar import vocabulary

PHRASES = {"left to right": "left-to-right", "right to left": "right-to-left"}


def world_token_vocabulary() -> list[str]:
    """Specials, then the world's words, then the merged direction phrases (ids are positions)."""
    return ["<pad>", "</s>", "<unk>"] + vocabulary() + sorted(PHRASES.values())


def build_world_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(world_token_vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Lowercase()]
        + [normalizers.Replace(Regex(r"\s+".join(p.split())), merged) for p, merged in PHRASES.items()])
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=16)
