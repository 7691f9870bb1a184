#!/usr/bin/env python3

r"""Baselines for influence evaluation: random, loss ranking, TracIn-TFIDF."""

from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

import torch
from captum.influence import DataInfluence
from torch import Tensor
from torch.nn import Module

from captum_tracin_we._checkpoints.checkpoint_pass import kept_state
from captum_tracin_we._data.batch_labels import class_labels
from captum_tracin_we._data.model_adapter import (
    ModelAdapter,
    find_embedding_layer,
    padding_id,
)
from captum_tracin_we._errors import check_k
from captum_tracin_we._scoring.top_k import top_k


def random_scores(n_test: int, n_train: int, seed: int = 0) -> Tensor:
    r"""A ``(n_test, n_train)`` matrix of seeded standard-normal scores."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n_test, n_train, generator=generator)


@torch.no_grad()
def output_gradients(
    model: Module, batches: Iterable[Any], num_classes: Optional[int] = None
) -> Tuple[Tensor, Tensor]:
    r"""
    Per-example cross-entropy losses and their gradients with respect to the
    logits, ``softmax(logits) - onehot(label)``, in eval mode.

    Args:
        model (torch.nn.Module): The classifier (tuple or dict batches, as
                    TracInWE takes them).
        batches (iterable): Batches with labels.
        num_classes (int, optional): Number of classes. Default: None, the
                    width of the logits.

    Returns:
        (losses, gradients): ``(n,)`` and ``(n, num_classes)``.
    """
    adapter = ModelAdapter(model, find_embedding_layer(model))
    losses, gradients = [], []
    with kept_state(model):
        model.eval()
        for batch in batches:
            args, kwargs, labels, _ = adapter.split(batch)
            logits = adapter.logits(args, kwargs).float()
            labels = class_labels(labels, torch.nn.CrossEntropyLoss())
            log_probs = logits.log_softmax(-1)
            losses.append(-log_probs.gather(1, labels[:, None]).squeeze(1).cpu())
            width = num_classes or logits.shape[-1]
            onehot = torch.nn.functional.one_hot(labels, width).float()
            gradients.append((log_probs.exp() - onehot).cpu())
    return torch.cat(losses), torch.cat(gradients)


def checkpoint_output_gradients(
    model: Module,
    checkpoints: Sequence[Any],
    load_fn: Callable[[Module, Any], float],
    batches: Iterable[Any],
    num_classes: int,
) -> List[Tuple[float, Tensor]]:
    r"""``(learning_rate, output_gradients)`` at each checkpoint."""
    result = []
    for checkpoint in checkpoints:
        learning_rate = float(load_fn(model, checkpoint))
        result.append((learning_rate, output_gradients(model, batches, num_classes)[1]))
    return result


def tfidf_tracin_scores(
    train_texts: Sequence[str],
    test_texts: Sequence[str],
    train_gradients: Sequence[Tuple[float, Tensor]],
    test_gradients: Sequence[Tuple[float, Tensor]],
) -> Tensor:
    r"""
    TracIn-TFIDF, the paper's control baseline: last-layer TracIn with the
    activation similarity replaced by the TF-IDF cosine similarity of the texts,
    ``sum_c lr_c * tfidf(x, x') * <dl(x)/df, dl(x')/df>``. TF-IDF is fitted on
    the training texts with scikit-learn's ``TfidfVectorizer`` (whitespace
    tokens, lower-cased).

    Args:
        train_texts (sequence of str): The ``n_train`` training texts.
        test_texts (sequence of str): The ``n_test`` test texts.
        train_gradients, test_gradients: Per checkpoint ``(lr, (n, C))`` logit
                    gradients, from :func:`checkpoint_output_gradients`.

    Returns:
        scores (Tensor): ``(n_test, n_train)``.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(token_pattern=r"\S+", lowercase=True)
    train_matrix = vectorizer.fit_transform(train_texts)
    similarity = torch.from_numpy(
        (vectorizer.transform(test_texts) @ train_matrix.T).toarray()
    ).float()
    error_similarity = sum(
        lr * test @ train.T
        for (lr, test), (_, train) in zip(test_gradients, train_gradients)
    )
    return similarity * error_similarity


class TracInTFIDF(DataInfluence):
    r"""
    TracIn-TFIDF (the paper's control baseline) as a Captum
    ``DataInfluence``, on the tokens the model sees: last-layer TracIn with the
    activation similarity replaced by the TF-IDF cosine similarity of the two
    texts' token ids, ``sum_c lr_c * tfidf(x, x') * <dl(x)/df, dl(x')/df>``
    (``f``: the logits). Padding and ``exclude_token_ids`` are left out of the
    TF-IDF, which is fitted on the training set (scikit-learn's
    ``TfidfVectorizer``, smooth idf, l2-normalised). Unlike
    :func:`tfidf_tracin_scores` it needs no texts, only the batches TracInWE
    takes, so it runs beside TracInWE in
    :func:`~captum_tracin_we.compare_influence`.

    Args:
        model (torch.nn.Module): The classifier.
        train_dataset (Dataset or DataLoader): Training batches, in order.
        checkpoints: As for TracInWE.
        checkpoints_load_func (Callable, optional): Default:
                    :func:`~captum_tracin_we.load_checkpoint_with_lr`
        batch_size (int, optional): For a Dataset. Default: 16
        exclude_token_ids (iterable of int, optional): Ids left out of the
                    TF-IDF, for example special tokens. Default: None
    """

    def __init__(
        self,
        model: Module,
        train_dataset: Any,
        checkpoints: Any,
        checkpoints_load_func: Optional[Callable[[Module, Any], float]] = None,
        batch_size: int = 16,
        exclude_token_ids: Optional[Iterable[int]] = None,
    ) -> None:

        from captum_tracin_we._checkpoints.checkpoints import (
            checkpoint_paths,
            load_checkpoint_with_lr,
        )
        from captum_tracin_we._data.training_data import training_loader

        self.model = model
        embedding = find_embedding_layer(model)
        self._pad_id = padding_id(model, embedding)
        train_dataset = training_loader(
            train_dataset, batch_size, self._pad_id, batch_size
        )
        self.train_dataset = train_dataset
        self.checkpoints = checkpoint_paths(checkpoints)
        self.load = checkpoints_load_func or load_checkpoint_with_lr
        self.excluded = set(int(i) for i in (exclude_token_ids or ()))
        self._adapter = ModelAdapter(model, embedding)
        train_documents = self._documents(train_dataset)
        self.num_train_examples = len(train_documents)
        from sklearn.feature_extraction.text import TfidfVectorizer

        self._vectorizer = TfidfVectorizer(analyzer=_as_terms)
        self._train_matrix = self._vectorizer.fit_transform(train_documents)
        self._train_gradients = self._gradients(train_dataset)

    def influence(  # type: ignore[override]
        self,
        inputs: Any,
        k: Optional[int] = None,
        proponents: bool = True,
        show_progress: bool = False,
    ) -> Any:
        r"""
        Returns:
            scores (Tensor): ``(n_test, n_train)`` if ``k`` is None, else
                    ``KMostInfluentialResults`` of the top ``k``.
        """

        from captum_tracin_we._data.tuple_batches import test_batches

        if k is not None:
            check_k(k, self.num_train_examples)
        batches = list(test_batches(inputs, self._pad_id))  # read twice
        test_matrix = self._vectorizer.transform(self._documents(batches))
        similarity = torch.from_numpy(
            (test_matrix @ self._train_matrix.T).toarray()
        ).float()
        errors = sum(
            lr * test @ train.T
            for (lr, test), (_, train) in zip(
                self._gradients(batches), self._train_gradients
            )
        )
        scores = similarity * errors
        return top_k(scores, k, proponents)

    def _documents(self, batches: Iterable[Any]) -> List[List[int]]:
        from captum_tracin_we._gradients.word_gradients import embedded_token_ids

        documents = []
        for batch in batches:
            ids, real, _, _ = embedded_token_ids(self._adapter, batch)
            for row, keep in zip(ids.cpu().tolist(), real.cpu().tolist()):
                documents.append(
                    [t for t, k in zip(row, keep) if k and t not in self.excluded]
                )
        return documents

    def _gradients(self, batches: Iterable[Any]) -> List[Tuple[float, Tensor]]:
        from captum_tracin_we._checkpoints.checkpoint_pass import checkpoint_pass

        batches = list(batches)
        if not batches:
            raise ValueError("No batches: pass at least one example with its label.")
        result = []
        for loaded in checkpoint_pass(self.model, self.checkpoints, self.load):
            gradients = output_gradients(self.model, batches)[1]
            result.append((loaded.learning_rate, gradients))
        return result


def _as_terms(document: List[int]) -> List[str]:
    return [str(token) for token in document]
