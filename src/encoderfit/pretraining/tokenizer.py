"""Training a tokenizer for a model pre-trained from scratch, with the `tokenizers` library.

Two families, each with the special tokens its models expect, saved as a standard fast tokenizer (tokenizer.json +
tokenizer_config.json) that `AutoTokenizer.from_pretrained` loads:

- bpe: byte-level BPE, the ModernBERT/RoBERTa kind (any byte is representable, so nothing is ever unknown);
  special tokens [CLS] [SEP] [MASK] [PAD] [UNK], as ModernBERT's tokenizer names them.
- wordpiece: BERT's kind (cased; unknown characters become [UNK]); the same special tokens.

A text is encoded as `[CLS] text [SEP]` and a pair as `[CLS] a [SEP] b [SEP]`, the way the fine-tuning stages and
plain pipelines feed the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, List, Literal, Optional

from ..core.errors import UserError

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BYTE_ALPHABET = 256


@dataclass
class TokenizerArgs:
    """Which tokenizer the pre-trained model gets."""

    kind: Literal["bpe", "wordpiece", "reuse"] = "bpe"
    """bpe: train a byte-level BPE tokenizer (ModernBERT/RoBERTa style) on the corpus; wordpiece: train a BERT-style
    one; reuse: take the tokenizer of `path`, or of model.name_or_path when continuing a model's pre-training
    (which must keep its own tokenizer: its embeddings are indexed by it)."""
    vocab_size: int = 16384
    """Vocabulary to learn, a multiple of 64 (tensor cores and the embedding matrix like it). The model's embedding
    table is rounded up to a multiple of 64 as well when a small corpus yields fewer tokens."""
    min_frequency: int = 2
    """Merges (BPE) or word pieces seen fewer times than this in the corpus are not learned."""
    path: Optional[str] = None
    """With reuse: a model directory or hub id whose tokenizer to take (default: model.name_or_path)."""

    def __post_init__(self) -> None:
        if self.vocab_size % 64:
            raise UserError(f"tokenizer.vocab_size must be a multiple of 64 (got {self.vocab_size}); "
                            f"use {max(64, round(self.vocab_size / 64) * 64)}")
        least = minimum_vocab(self.kind)
        if self.kind != "reuse" and self.vocab_size < least:
            raise UserError(f"tokenizer.vocab_size {self.vocab_size} is too small for a {self.kind} tokenizer: its "
                            f"{len(SPECIAL_TOKENS)} special tokens and base alphabet need more; use at least {least}")
        if self.min_frequency < 1:
            raise UserError(f"tokenizer.min_frequency must be at least 1 (got {self.min_frequency})")


def minimum_vocab(kind: str) -> int:
    """The smallest vocabulary (a multiple of 64) leaving room for learned tokens after the special tokens and the
    alphabet: bytes for BPE, about 200 frequent characters for WordPiece."""
    base = BYTE_ALPHABET if kind == "bpe" else 200
    return -(-(base + len(SPECIAL_TOKENS) + 64) // 64) * 64


def train_tokenizer(documents: Iterable[str], args: TokenizerArgs, max_length: int):
    """A fast tokenizer (transformers' PreTrainedTokenizerFast) trained on `documents`."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    # lstrip: "is [MASK]" stands for a word with its leading space, the way pre-training masked it
    specials = [AddedToken(t, special=True, normalized=False, lstrip=t == "[MASK]") for t in SPECIAL_TOKENS]
    if args.kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                                      special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
    else:
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False, clean_text=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(vocab_size=args.vocab_size, min_frequency=args.min_frequency,
                                            special_tokens=specials, limit_alphabet=200, show_progress=False)
    tok.train_from_iterator(documents, trainer=trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=max_length, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", "attention_mask"])
    log.info("tokenizer: %s, %d tokens learned (asked for %d)", args.kind, len(fast), args.vocab_size)
    return fast


def special_ids(tokenizer) -> List[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens]
