#!/usr/bin/env python3

r"""
Synthetic text data with a known answer, to check word-level influence.

In a planted-trigger dataset each text is filler words plus exactly one
*trigger* token, and the trigger alone decides the label. A method that finds
the words carrying influence should name the trigger when a test text and a
training text share it.
"""

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

PAD_ID = 0


@dataclass
class PlantedTriggerData:
    r"""
    Attributes:
        token_ids (Tensor): ``(n, length)`` long; 0 is padding (right-padded).
        labels (Tensor): ``(n,)`` long class of each text.
        trigger_ids (Tensor): ``(n,)`` long, the trigger token of each text.
        trigger_positions (Tensor): ``(n,)`` long, where the trigger sits.
        class_triggers (Tensor): ``(n_classes, triggers_per_class)`` long, the
                    trigger tokens of each class.
        vocab_size (int): Size of the vocabulary (ids ``0 .. vocab_size - 1``).
    """

    token_ids: Tensor
    labels: Tensor
    trigger_ids: Tensor
    trigger_positions: Tensor
    class_triggers: Tensor
    vocab_size: int

    def dataset(self) -> TensorDataset:
        r"""``(token_ids, labels)`` pairs in Captum's tuple convention."""
        return TensorDataset(self.token_ids, self.labels)


def planted_trigger_dataset(
    n_examples: int,
    n_classes: int = 2,
    triggers_per_class: int = 3,
    n_filler: int = 50,
    length: int = 12,
    min_length: int = 4,
    seed: int = 0,
) -> PlantedTriggerData:
    r"""
    Generates texts of random filler tokens with one planted trigger token.

    Token ids: 0 is padding; ``1 .. n_classes * triggers_per_class`` are the
    triggers (class ``c`` owns ``triggers_per_class`` consecutive ids); the
    ``n_filler`` ids after them are filler words, drawn uniformly, so filler
    carries no information about the label.

    Args:
        n_examples (int): Number of texts.
        n_classes (int, optional): Number of classes. Default: 2
        triggers_per_class (int, optional): Trigger tokens per class. Default: 3
        n_filler (int, optional): Number of filler tokens. Default: 50
        length (int, optional): Padded length. Default: 12
        min_length (int, optional): Shortest text. Default: 4
        seed (int, optional): Seed of the generator. Default: 0

    Returns:
        data (PlantedTriggerData): Texts, labels and where the triggers are.
    """
    if not 1 <= min_length <= length:
        raise ValueError(f"Need 1 <= min_length <= length; got {min_length}, {length}.")
    gen = torch.Generator().manual_seed(seed)
    n_triggers = n_classes * triggers_per_class
    class_triggers = 1 + torch.arange(n_triggers).reshape(n_classes, triggers_per_class)
    labels = torch.randint(0, n_classes, (n_examples,), generator=gen)
    which = torch.randint(0, triggers_per_class, (n_examples,), generator=gen)
    trigger_ids = class_triggers[labels, which]
    sizes = torch.randint(min_length, length + 1, (n_examples,), generator=gen)
    filler = (
        1 + n_triggers + torch.randint(0, n_filler, (n_examples, length), generator=gen)
    )
    positions = (torch.rand(n_examples, generator=gen) * sizes).long()
    token_ids = torch.where(torch.arange(length) < sizes[:, None], filler, PAD_ID)
    token_ids[torch.arange(n_examples), positions] = trigger_ids
    return PlantedTriggerData(
        token_ids=token_ids,
        labels=labels,
        trigger_ids=trigger_ids,
        trigger_positions=positions,
        class_triggers=class_triggers,
        vocab_size=1 + n_triggers + n_filler,
    )
