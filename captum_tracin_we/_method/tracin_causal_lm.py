#!/usr/bin/env python3

r"""
TracIn-WE for causal language models: the same method on the input side of
the token embedding, with the per-example language-model loss, and scores per
predicted token of a continuation.
"""

from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Union

import torch
from captum.log import log_usage
from torch import Tensor
from torch.nn import Module
from torch.utils.data import DataLoader, Dataset

from captum_tracin_we._checkpoints.checkpoint_pass import one_call_per_model
from captum_tracin_we._checkpoints.checkpoints import load_checkpoint_with_lr
from captum_tracin_we._data.batch_labels import IGNORE_INDEX
from captum_tracin_we._data.causal_lm_data import (
    check_left_padding,
    check_lm_head,
    per_token_batch,
)
from captum_tracin_we._data.model_adapter import find_embedding_layer
from captum_tracin_we._errors import TracInWEError
from captum_tracin_we._gradients.causal_lm_loss import CausalLMLoss
from captum_tracin_we._method.tracin_we import LoadFn, LossFn, TracInWE


@dataclass
class TokenInfluence:
    r"""
    TracIn-WE scores per predicted token of test continuations.

    Attributes:
        scores (Tensor): ``(R, n_train)`` float32, row ``r`` the influence of
                    every training example on the loss of one predicted token;
                    positive: a step on the training example raised that
                    token's probability. An example's rows sum to its
                    :meth:`~TracInWE.influence` row.
        example (Tensor): ``(R,)`` long, the test example of each row.
        position (Tensor): ``(R,)`` long, the position of the predicted token
                    in the example (its logits are read at ``position - 1``).
        token_ids (Tensor): ``(R,)`` long, the predicted token ids.
        inputs (dict): The test batch with one row per predicted token (every
                    other label ``-100``), for
                    :meth:`~TracInWE.word_influence`: through which shared
                    tokens each training example acts on each token.
    """

    scores: Tensor
    example: Tensor
    position: Tensor
    token_ids: Tensor
    inputs: Dict[str, Tensor]

    def for_example(self, index: int) -> Tensor:
        r"""``(T, n_train)`` the rows of test example ``index``, in order."""
        return self.scores[self.example == index]


class TracInWECausalLM(TracInWE):
    r"""
    TracIn-WE for causal language models (``AutoModelForCausalLM``, such as
    ``GPT2LMHeadModel``): :class:`TracInWE` with the per-example language-model
    loss :class:`CausalLMLoss` (each predicted token's cross-entropy, summed by
    default; labels ``-100``, such as a prompt's, are context only).

    The word-embedding layer is the *input* side of the token embedding: the
    gradient at the embedding output, sparse (one row per token a text holds),
    so the score splits exactly over the tokens two texts share. Where the
    output layer is tied to the embedding (GPT-2), this equals Captum's
    ``TracInCP`` on the input embedding of an *untied* copy of the model; the
    tied parameter's full gradient adds a dense output-side part, available
    with :func:`~captum_tracin_we.tracincp` on the embedding (see "Causal
    language models" in :doc:`method`).

    Batches are dicts with ``input_ids``, ``attention_mask``, ``labels``
    ``(B, L)`` (unshifted) and, for left padding, ``position_ids`` that count
    real tokens only, as :func:`causal_lm_batch` makes them.
    """

    def __init__(
        self,
        model: Module,
        train_dataset: Union[Dataset, DataLoader],
        checkpoints: Union[str, List[str], Iterator[Any]],
        checkpoints_load_func: Optional[LoadFn] = load_checkpoint_with_lr,
        embedding_layer: Optional[Union[Module, str]] = None,
        loss_fn: Optional[LossFn] = None,
        batch_size: Union[int, None] = 1,
        test_loss_fn: Optional[LossFn] = None,
        top_k_words: Optional[int] = None,
        exclude_token_ids: Optional[Iterable[int]] = None,
        index: Optional[str] = None,
        idf_power: Optional[float] = None,
        normalize: Optional[str] = None,
    ) -> None:
        r"""
        Args:
            model (torch.nn.Module): A causal language model whose logits are
                        ``(B, L, vocab)``; a Hugging Face model must have a
                        language-model head.
            loss_fn (Callable, optional): The training loss. Default: None,
                        meaning ``CausalLMLoss(per_token="sum")``: each
                        example's summed token losses.
            test_loss_fn (Callable, optional): The test loss. Default:
                        ``loss_fn``

        The other arguments are those of :class:`TracInWE`.

        Raises:
            TracInWEError: If the model has no language-model head (before any
                        data is read).
            BatchError: If the first training batch is left-padded without
                        ``position_ids`` (test batches are checked likewise).
        """
        embedding = find_embedding_layer(model, embedding_layer)
        check_lm_head(model, embedding)
        super().__init__(
            model,
            train_dataset,
            checkpoints,
            checkpoints_load_func,
            embedding,
            loss_fn if loss_fn is not None else CausalLMLoss(),
            batch_size,
            test_loss_fn,
            top_k_words,
            exclude_token_ids,
            index,
            idf_power,
            normalize,
        )
        first = next(iter(self.train_dataloader), None)  # collated, not run
        check_left_padding(first, "first training")

    @property
    def tied_embeddings(self) -> bool:
        r"""True when the output layer shares the embedding's weight (GPT-2)."""
        getter = getattr(self.model, "get_output_embeddings", None)
        head = getter() if callable(getter) else None
        weight = getattr(head, "weight", None)
        return weight is self.embedding_layer.weight

    @log_usage()
    @one_call_per_model
    def token_influence(
        self, inputs: Dict[str, Tensor], show_progress: bool = False
    ) -> TokenInfluence:
        r"""
        Scores per predicted token: which training documents raised (positive)
        or lowered (negative) the probability of each completion token.

        The test loss of an example is the sum of its token losses (with
        ``per_token="mean"``, their mean: each row is then divided by the
        example's number of predicted tokens), and the scores are linear in
        it, so each token's row is exact and an example's rows sum to its
        :meth:`influence` row. Costs one test gradient per predicted token.

        Args:
            inputs (dict): One dict batch with ``(B, L)`` labels, ``-100``
                        where not predicted, as :func:`causal_lm_batch` gives.
            show_progress (bool, optional): Show a progress bar. Default: False

        Returns:
            token_influence (TokenInfluence): ``(R, n_train)`` scores for the
                        ``R`` predicted tokens, with their examples, positions
                        and ids.

        Raises:
            BatchError: If ``inputs`` is not one dict batch with LM labels.
            TracInWEError: If the test loss is not a :class:`CausalLMLoss`.
        """
        test_loss = self.test_loss_fn
        if not isinstance(test_loss, CausalLMLoss):
            raise TracInWEError(
                "Per-token scores split the test loss over its tokens, which needs "
                f"`test_loss_fn` to be a CausalLMLoss; got {type(test_loss).__name__}."
            )
        expanded, example, position = per_token_batch(inputs)
        scores = self.influence(expanded, show_progress=show_progress)
        assert isinstance(scores, Tensor)
        if test_loss.per_token == "mean":
            labels = torch.as_tensor(inputs["labels"])
            counts = (labels[:, 1:] != IGNORE_INDEX).sum(1)
            scores = scores / counts[example].to(scores.dtype).unsqueeze(1)
        token_ids = expanded["labels"][torch.arange(example.numel()), position]
        return TokenInfluence(scores, example, position, token_ids, expanded)

    def _as_batches(self, inputs: Any) -> Union[DataLoader, List[Any]]:
        batches = super()._as_batches(inputs)
        if isinstance(batches, list):
            for batch in batches:
                check_left_padding(batch, "test")
        return batches
