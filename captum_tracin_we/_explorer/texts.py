#!/usr/bin/env python3

r"""
How the explorer reads texts and labels: the tokenizer's encoder, label
names, coloured words and label counts.
"""

from typing import Any, Callable, Dict, List, Optional, Tuple

from torch import Tensor

from captum_tracin_we._views.word_html import word_color

Encoder = Callable[[List[str], Tensor], Any]  # texts, labels -> a batch


def hf_encoder(tokenizer: Any, max_length: int) -> Encoder:
    r"""The default encoder: the tokenizer's ids and attention mask, cut at
    ``max_length`` tokens, with ``labels`` (Hugging Face's convention, as the
    ``explain`` command and the demo batch their training data)."""

    def encode(texts: List[str], labels: Tensor) -> Dict[str, Tensor]:
        batch = tokenizer(
            texts,
            truncation=True,
            max_length=max_length,
            padding=len(texts) > 1,  # one text needs no pad token
            return_tensors="pt",
            split_special_tokens=True,  # a literal "[PAD]" in a text is text
        )
        return {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "labels": labels,
        }

    return encode


def _label_names(given: Optional[List[str]], model: Any, num_classes: int) -> List[str]:
    if given is not None:
        if len(given) != num_classes:
            raise ValueError(
                f"{len(given)} label names for a model with {num_classes} classes; "
                "pass one name per class."
            )
        return [str(name) for name in given]
    from captum_tracin_we._files.labels import model_label_names

    return model_label_names(getattr(model, "config", None), num_classes)


def _colored(words: List[str], values: List[float]) -> List[Dict[str, Any]]:
    r"""Words with their contribution and Captum's colour, scaled by the side's
    largest ``|contribution|``."""
    scale = max((abs(v) for v in values), default=0.0) or 1.0
    return [
        {"w": w, "value": v, "color": word_color(v / scale)}
        for w, v in zip(words, values)
    ]


def _counts(labels: List[int]) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for label in labels:
        counts[str(label)] = counts.get(str(label), 0) + 1
    return counts


def full_token_ids(tokenizer: Any, texts: List[str]) -> Optional[List[List[int]]]:
    r"""The token ids of whole texts; None without a Hugging Face tokenizer."""
    if not (callable(tokenizer) and hasattr(tokenizer, "all_special_ids")):
        return None
    return tokenizer(texts, truncation=False, verbose=False, split_special_tokens=True)[
        "input_ids"
    ]


def check_training_texts(
    tokenizer: Any,
    train_texts: List[str],
    read: List[Tuple[List[int], int]],
    full: List[List[int]],
) -> None:
    r"""
    Checks that each training text tokenizes to its example's tokens (the
    example may be cut; special tokens are not compared).

    Raises:
        ValueError: Counting the texts that do not match, naming the first.
    """
    special = set(tokenizer.all_special_ids)
    left = getattr(tokenizer, "truncation_side", "right") == "left"
    wrong = []
    for i, ((ids, _), whole) in enumerate(zip(read, full)):
        seen = [t for t in ids if t not in special]
        words = [t for t in whole if t not in special]
        kept = words[len(words) - len(seen) :] if left else words[: len(seen)]
        if kept != seen:
            wrong.append(i)
    if wrong:
        i = wrong[0]
        raise ValueError(
            f"{len(wrong)} of {len(read)} training texts do not match their "
            f"training example's tokens, first train_texts[{i}] = "
            f"{train_texts[i][:60]!r}. Pass the texts of the training "
            "data, one per example, in its order (for data not made by this "
            "tokenizer from these texts, such as text pairs, pass `encode=`, "
            "which skips this check)."
        )
