#!/usr/bin/env python3

r"""
Batches of a causal language model: documents (every token predicted) or
prompts with completions (the prompt is context, labelled ``-100``), padded on
either side with position ids that make the padding side irrelevant; the
one-token-per-row expansion behind per-token scores; and the check that a
model has a language-model head.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.nn import Embedding, Module

from captum_tracin_we._data.batch_labels import IGNORE_INDEX
from captum_tracin_we._errors import BatchError, TracInWEError


def check_lm_head(model: Module, embedding: Embedding) -> None:
    r"""
    Raises unless ``model`` has a language-model head over the embedding's
    vocabulary: a Hugging Face model's ``get_output_embeddings()`` (models
    without the method are taken as they are; the loss checks their logits).

    Raises:
        TracInWEError: For a Hugging Face model without a language-model head,
                    or one whose head does not cover the vocabulary.
    """
    getter = getattr(model, "get_output_embeddings", None)
    if not callable(getter):
        return
    head = getter()
    if head is None:
        raise TracInWEError(
            f"The model ({type(model).__name__}) has no language-model head "
            "(`get_output_embeddings()` is None), so it gives no next-token "
            "logits to explain. Load it with `AutoModelForCausalLM` (for example "
            "GPT2LMHeadModel), not `AutoModel` or a classifier."
        )
    rows = getattr(head, "out_features", None)
    weight = getattr(head, "weight", None)
    if rows is None and isinstance(weight, Tensor):
        rows = weight.shape[0]
    if rows is not None and int(rows) != embedding.num_embeddings:
        raise TracInWEError(
            f"The model's language-model head has {rows} outputs but its input "
            f"embedding {embedding.num_embeddings} rows; TracIn-WE for causal "
            "language models needs one vocabulary on both sides."
        )


def causal_lm_batch(
    tokenizer: Any,
    texts: Sequence[str],
    completions: Optional[Sequence[str]] = None,
    max_length: Optional[int] = None,
    padding_side: str = "right",
) -> Dict[str, Tensor]:
    r"""
    Tokenizes texts for a causal language model, as TracIn-WE reads them.

    Without ``completions`` each text is a document whose every token after the
    first is predicted (training documents, as ``Trainer`` with
    ``DataCollatorForLanguageModeling(mlm=False)`` trains on them). With them,
    ``texts[i]`` is a prompt, labelled ``-100`` (context only), followed by
    ``completions[i]``, whose tokens are predicted: the continuation explained.
    Prompt and completion are tokenized apart and joined, so the boundary is
    exact; no special tokens are added.

    Args:
        tokenizer: A Hugging Face tokenizer with a pad token.
        texts (sequence of str): Documents, or prompts with ``completions``.
        completions (sequence of str, optional): One non-empty completion per
                    prompt. Default: None (documents)
        max_length (int, optional): Tokens kept per example, cut at the end
                    (the completion's end first). Default: None, meaning the
                    tokenizer's ``model_max_length`` when it is set, else all.
        padding_side (str, optional): ``"right"`` or ``"left"``; scores do not
                    depend on it (``position_ids`` count real tokens only).
                    Default: ``"right"``

    Returns:
        batch (dict): ``input_ids``, ``attention_mask``, ``position_ids`` and
                    ``labels``, each ``(n, L)`` long; ``labels`` is
                    ``input_ids`` with the prompt and the padding set to -100.

    Raises:
        TracInWEError: If the tokenizer has no pad token, a completion is
                    empty, a prompt fills the window so that no completion
                    token is left, a document has fewer than two tokens, or the
                    arguments do not fit.
    """
    texts = _strings(texts, "texts")
    if padding_side not in ("right", "left"):
        raise ValueError(
            f"`padding_side` must be 'right' or 'left'; got {padding_side!r}."
        )
    pad_id = getattr(tokenizer, "pad_token_id", None)
    if pad_id is None:
        raise TracInWEError(
            "The tokenizer has no pad token, so examples of different lengths "
            "cannot share a batch. Set one before scoring, for example "
            "`tokenizer.pad_token = tokenizer.eos_token` (GPT-2 has none); padding "
            "never counts, whichever token it is."
        )
    limit = _max_length(tokenizer, max_length)
    rows: List[Tuple[List[int], List[int]]] = []
    if completions is None:
        for i, text in enumerate(texts):
            ids = _encoded(tokenizer, text)[:limit]
            if len(ids) < 2:
                raise TracInWEError(
                    f"Document {i} has {len(ids)} token(s); a causal language model "
                    "predicts every token after the first, so it needs at least "
                    "two. Drop it or join it to another document."
                )
            rows.append((ids, list(ids)))
    else:
        completions = _strings(completions, "completions")
        if len(completions) != len(texts):
            raise ValueError(
                f"{len(texts)} prompts but {len(completions)} completions; pass one "
                "completion per prompt."
            )
        for i, (prompt, completion) in enumerate(zip(texts, completions)):
            rows.append(_prompt_row(tokenizer, i, prompt, completion, limit))
    return _padded(rows, int(pad_id), padding_side)


def _strings(values: Any, name: str) -> List[str]:
    if isinstance(values, str):
        values = [values]
    values = list(values)
    if not values or not all(isinstance(v, str) for v in values):
        raise ValueError(f"`{name}` must be a non-empty list of strings.")
    return values


def _max_length(tokenizer: Any, max_length: Optional[int]) -> Optional[int]:
    if max_length is not None:
        if isinstance(max_length, bool) or not isinstance(max_length, int):
            raise ValueError(f"`max_length` must be an int; got {max_length!r}.")
        if max_length < 2:
            raise ValueError(
                f"`max_length` must be at least 2 (a context token and a predicted "
                f"one); got {max_length}."
            )
        return max_length
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if isinstance(limit, int) and limit < 10**7 else None


def _encoded(tokenizer: Any, text: str) -> List[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _prompt_row(
    tokenizer: Any, index: int, prompt: str, completion: str, limit: Optional[int]
) -> Tuple[List[int], List[int]]:
    completion_ids = _encoded(tokenizer, completion) if completion.strip() else []
    if not completion_ids:
        raise TracInWEError(
            f"Completion {index} is empty ({completion!r}); there is no token to "
            "explain. Give the continuation whose tokens should be traced back."
        )
    prompt_ids = _encoded(tokenizer, prompt)
    ids = (prompt_ids + completion_ids)[:limit]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + completion_ids)[:limit]
    if all(label == IGNORE_INDEX for label in labels[1:]):
        kept = max(0, len(ids) - len(prompt_ids))
        raise TracInWEError(
            f"Prompt {index} has {len(prompt_ids)} tokens and the window "
            f"{limit} leaves {kept} completion token(s) to predict (the first "
            "token of a text is never predicted). Shorten the prompt, raise "
            "`max_length`, or start the prompt with a token (for example "
            "tokenizer.bos_token) when it is empty."
        )
    return ids, labels


def _padded(
    rows: List[Tuple[List[int], List[int]]], pad_id: int, side: str
) -> Dict[str, Tensor]:
    width = max(len(ids) for ids, _ in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros(shape, dtype=torch.long)
    for i, (ids, row_labels) in enumerate(rows):
        span = slice(0, len(ids)) if side == "right" else slice(width - len(ids), width)
        input_ids[i, span] = torch.tensor(ids, dtype=torch.long)
        labels[i, span] = torch.tensor(row_labels, dtype=torch.long)
        mask[i, span] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": mask,
        "position_ids": real_positions(mask),
        "labels": labels,
    }


def real_positions(attention_mask: Tensor) -> Tensor:
    r"""``(B, L)`` position ids counting real tokens only (0 on padding), so
    that left and right padding give every token the same position."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def per_token_batch(batch: Any) -> Tuple[Dict[str, Tensor], Tensor, Tensor]:
    r"""
    One row per predicted token of a dict batch: row ``r`` is example
    ``example[r]`` with every label but the one at ``position[r]`` set to
    ``-100``, so that its loss is that one token's and, the scores being
    linear in the test loss, its scores sum (over an example's rows) to the
    example's with a summed loss.

    Returns:
        (batch, example, position): The expanded dict batch and ``(R,)`` long
                    indices of each row's example and predicted position.

    Raises:
        BatchError: If the batch is not a dict with ``(B, L)`` labels.
    """
    if not isinstance(batch, dict) or "labels" not in batch:
        raise BatchError(
            "Per-token scores need one dict batch with `labels` (B, L), such as "
            "`causal_lm_batch(tokenizer, prompts, completions)` gives."
        )
    labels = torch.as_tensor(batch["labels"])
    if labels.dim() != 2:
        raise BatchError(
            f"Per-token scores need (B, L) language-model labels; got shape "
            f"{tuple(labels.shape)}."
        )
    predicted = labels != IGNORE_INDEX
    predicted[:, 0] = False
    example, position = predicted.nonzero(as_tuple=True)
    if example.numel() == 0:
        raise BatchError(
            "No example of the batch has a token to predict (every label after the "
            "first is -100); give non-empty completions."
        )
    expanded: Dict[str, Tensor] = {}
    for key, value in batch.items():
        if (
            isinstance(value, Tensor)
            and value.dim()
            and value.shape[0] == labels.shape[0]
        ):
            expanded[key] = value[example]
        else:
            expanded[key] = value
    kept = torch.full(
        (example.numel(), labels.shape[1]), IGNORE_INDEX, dtype=torch.long
    )
    rows = torch.arange(example.numel())
    kept[rows, position] = labels[example, position].long()
    expanded["labels"] = kept
    return expanded, example, position


def check_left_padding(batch: Any, role: str) -> None:
    r"""
    Raises for a left-padded dict batch without ``position_ids``: Hugging Face
    causal LMs (GPT-2, Llama...) number positions from 0 whatever the mask says,
    so its tokens would sit at other positions than unpadded, and its scores
    would depend on the padding.

    Raises:
        BatchError: With the fix (``position_ids`` counting real tokens).
    """
    if not isinstance(batch, dict) or "position_ids" in batch:
        return
    mask = batch.get("attention_mask")
    if not isinstance(mask, Tensor) or mask.dim() != 2 or mask.shape[1] < 2:
        return
    real = mask.bool()
    left = real[:, 1:] & ~real[:, :-1]  # a real token right after padding
    if bool(left.any()):
        row = int(left.any(1).nonzero()[0])
        raise BatchError(
            f"The {role} batch is left-padded (example {row} starts with padding) "
            "but has no `position_ids`, so the model would number its tokens from "
            "the padding and the scores would depend on it. Add `position_ids = "
            "(attention_mask.cumsum(-1) - 1).clamp(min=0)`, as causal_lm_batch "
            "does, or pad on the right."
        )
