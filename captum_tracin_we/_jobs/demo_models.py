#!/usr/bin/env python3

r"""Small text classifiers built offline: a WordPiece tokenizer and a BERT."""

from typing import Iterable

from torch.nn import Module
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    PreTrainedTokenizerFast,
)


def train_wordpiece_tokenizer(
    texts: Iterable[str], vocab_size: int = 4000
) -> PreTrainedTokenizerFast:
    r"""
    Trains a lower-casing BERT-style WordPiece tokenizer on ``texts`` (in well
    under a second for a few thousand sentences), with ``[CLS] ... [SEP]``
    framing and ``[PAD]`` = 0.
    """
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False
    )
    tokenizer.train_from_iterator(list(texts), trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def small_bert_classifier(
    vocab_size: int,
    num_labels: int = 2,
    hidden_size: int = 128,
    num_layers: int = 2,
    seed: int = 0,
) -> Module:
    r"""A randomly initialised BERT sequence classifier built from a config."""
    import torch

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=128,
        num_labels=num_labels,
        pad_token_id=0,
    )
    return BertForSequenceClassification(config)
