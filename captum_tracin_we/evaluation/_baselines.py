#!/usr/bin/env python3

r"""Baselines for influence evaluation: random, loss ranking, TracIn-TFIDF."""

from typing import Any, Callable, Iterable, List, Sequence, Tuple

import torch
from torch import Tensor
from torch.nn import Module

from captum_tracin_we._utils.model_adapter import ModelAdapter, find_embedding_layer


def random_scores(n_test: int, n_train: int, seed: int = 0) -> Tensor:
    r"""A ``(n_test, n_train)`` matrix of seeded standard-normal scores."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n_test, n_train, generator=generator)


@torch.no_grad()
def output_gradients(
    model: Module, batches: Iterable[Any], num_classes: int
) -> Tuple[Tensor, Tensor]:
    r"""
    Per-example cross-entropy losses and their gradients with respect to the
    logits, ``softmax(logits) - onehot(label)``, in eval mode.

    Args:
        model (torch.nn.Module): The classifier (tuple or dict batches, as
                    TracInWE takes them).
        batches (iterable): Batches with labels.
        num_classes (int): Number of classes.

    Returns:
        (losses, gradients): ``(n,)`` and ``(n, num_classes)``.
    """
    adapter = ModelAdapter(model, find_embedding_layer(model))
    was_training = model.training
    model.eval()
    losses, gradients = [], []
    for batch in batches:
        args, kwargs, labels, _ = adapter.split(batch)
        logits = adapter.logits(args, kwargs).float()
        log_probs = logits.log_softmax(-1)
        losses.append(-log_probs.gather(1, labels[:, None]).squeeze(1).cpu())
        onehot = torch.nn.functional.one_hot(labels, num_classes).float()
        gradients.append((log_probs.exp() - onehot).cpu())
    model.train(was_training)
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
