#!/usr/bin/env python3

r"""Fine-tuning with checkpoints in the format TracInWE's default loader reads."""

import io
import os
from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch.nn import Module
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from captum_tracin_we._files.atomic_files import write_file


def encode(
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Tuple[str, int]],
    max_length: int = 64,
) -> List[Dict[str, Any]]:
    r"""Tokenizes ``(text, label)`` pairs into Hugging Face feature dicts."""
    texts = [text for text, _ in examples]
    encoded = tokenizer(  # a literal "[PAD]" in a text is text, not padding
        texts, truncation=True, max_length=max_length, split_special_tokens=True
    )
    return [
        {
            "input_ids": encoded["input_ids"][i],
            "attention_mask": encoded["attention_mask"][i],
            "labels": label,
        }
        for i, (_, label) in enumerate(examples)
    ]


def loader(
    tokenizer: PreTrainedTokenizerBase,
    features: List[Dict[str, Any]],
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
) -> DataLoader:
    r"""A DataLoader of padded ``BatchEncoding`` batches with a ``labels`` key."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        features,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator if shuffle else None,
        collate_fn=DataCollatorWithPadding(tokenizer),
    )


def fine_tune(
    model: Module,
    train_loader: DataLoader,
    checkpoint_dir: str,
    epochs: int = 3,
    learning_rate: float = 1e-3,
    checkpoints_per_epoch: int = 1,
    show_progress: bool = True,
) -> List[str]:
    r"""
    Trains ``model`` with AdamW at a constant learning rate and saves
    ``{"model_state_dict", "learning_rate"}`` checkpoints, evenly spaced.

    Returns:
        paths (list of str): The checkpoint files, oldest first.
    """
    os.makedirs(checkpoint_dir, exist_ok=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    steps = len(train_loader)
    save_at = {
        round((i + 1) * steps / checkpoints_per_epoch) - 1
        for i in range(checkpoints_per_epoch)
    }
    paths: List[str] = []
    model.train()
    bar = tqdm(total=epochs * steps, desc="Fine-tuning", disable=not show_progress)
    for _ in range(epochs):
        for step, batch in enumerate(train_loader):
            loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step in save_at:
                path = os.path.join(checkpoint_dir, f"checkpoint-{len(paths):02d}.pt")
                state = {
                    "model_state_dict": model.state_dict(),
                    "learning_rate": learning_rate,
                }
                _save_whole(state, path)
                paths.append(path)
    bar.close()
    model.eval()
    return paths


def _save_whole(state: Dict[str, Any], path: str) -> None:
    r"""Saves a checkpoint under a temporary name and renames it into place, so
    that a full disk never leaves a truncated checkpoint at ``path``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_file(path, buffer.getvalue())


@torch.no_grad()
def accuracy(model: Module, test_loader: DataLoader) -> float:
    r"""Share of examples whose argmax logit equals the label."""
    model.eval()
    correct = total = 0
    for batch in test_loader:
        labels = batch.pop("labels")
        predictions = model(**batch).logits.argmax(-1)
        correct += int((predictions == labels).sum())
        total += len(labels)
    return correct / max(total, 1)
