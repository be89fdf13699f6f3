"""A word-level tokenizer for the world's vocabulary, built locally (no downloads).

It is a real ``transformers.PreTrainedTokenizerFast`` so it saves, loads and pads like the T5
tokenizer a real CogVideoX checkpoint ships.
"""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from .world.grammar import vocabulary


def build_world_tokenizer() -> PreTrainedTokenizerFast:
    specials = ["<pad>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=16)
