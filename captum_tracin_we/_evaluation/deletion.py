#!/usr/bin/env python3

r"""
Case deletion (Yeh et al. 2022, section 3): remove a test example's top-k
proponents (or opponents), retrain, and measure the change of the test
example's ground-truth-class probability.
"""

import math
from dataclasses import dataclass, field
from typing import (
    Any,
    Callable,
    Dict,
    FrozenSet,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

import torch
from torch import Tensor
from tqdm.auto import tqdm

Model = Any
TrainFn = Callable[[Sequence[int], int], Model]
TrainManyFn = Callable[[List[List[int]], List[int]], Sequence[Model]]
ProbabilityFn = Callable[[Model], Tensor]
RANDOM = "random"


def influence_scores(method: Any, test_inputs: Any) -> Tensor:
    r"""
    The ``(n_test, n_train)`` score matrix of ``method``: a tensor as it is, or
    the result of ``method.influence(test_inputs)`` for a Captum
    ``DataInfluence``-like object (TracInWE, TracInCP, TracInCPFast...).
    """
    if isinstance(method, Tensor):
        scores = method
    else:
        scores = method.influence(test_inputs)
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        raise ValueError(
            "A method must give an (n_test, n_train) score tensor; got "
            f"{type(scores).__name__} {tuple(getattr(scores, 'shape', ()))}."
        )
    return scores.detach().float().cpu()


def removal_set(scores: Tensor, k: int, proponents: bool) -> List[int]:
    r"""
    The ``k`` training indices with the largest scores (proponents) or the most
    negative scores (opponents) in one row of a score matrix.
    """
    if k > scores.numel():
        raise ValueError(f"k={k} exceeds the {scores.numel()} training examples.")
    return torch.topk(scores, k, largest=proponents).indices.tolist()


@dataclass
class DeletionResult:
    r"""
    Changes of the test examples' ground-truth-class probability after
    deletion and retraining.

    Attributes:
        deltas (dict): ``deltas[method][metric]`` is a ``(n_test, n_k, n_seeds)``
                    tensor of ``p(after) - p(full data, same seed)``; metrics are
                    ``"DEL+"`` (proponents removed; lower is better) and
                    ``"DEL-"`` (opponents removed; higher is better). The
                    ``"random"`` method has the single metric ``"random"``.
        ks (list of int): The k grid.
        seeds (list of int): The retraining seeds.
        baseline (Tensor): ``(n_seeds, n_test)`` probabilities of the models
                    trained on the full set.
        retrains (int): Number of models trained (cached repeats excluded).
    """

    deltas: Dict[str, Dict[str, Tensor]]
    ks: List[int]
    seeds: List[int]
    baseline: Tensor
    retrains: int = 0
    removals: Dict[Tuple[str, str, int, int], List[int]] = field(default_factory=dict)

    def mean_and_se(self, method: str, metric: str) -> Tuple[Tensor, Tensor]:
        r"""
        Mean over test examples of the seed-averaged change, per k, and its
        standard error over test examples. Returns two ``(n_k,)`` tensors.
        """
        per_test = self.deltas[method][metric].mean(dim=2)
        n_test = per_test.shape[0]
        se = (
            per_test.std(dim=0, unbiased=True) / math.sqrt(n_test)
            if n_test > 1
            else (torch.zeros(per_test.shape[1]))
        )
        return per_test.mean(dim=0), se

    def auc(self, method: str, metric: str) -> Tuple[float, float]:
        r"""AUC-DEL: the mean over the k grid, with its standard error over tests."""
        per_test = self.deltas[method][metric].mean(dim=(1, 2))
        n_test = per_test.numel()
        se = (
            float(per_test.std(unbiased=True) / math.sqrt(n_test))
            if n_test > 1
            else 0.0
        )
        return float(per_test.mean()), se

    def table(self) -> List[Dict[str, Any]]:
        r"""Tidy rows ``{method, metric, k, mean, se, n_test}``; k="AUC" is AUC-DEL."""
        rows = []
        for method, metrics in self.deltas.items():
            for metric in metrics:
                means, ses = self.mean_and_se(method, metric)
                n_test = metrics[metric].shape[0]
                for k, mean, se in zip(self.ks, means.tolist(), ses.tolist()):
                    rows.append(
                        dict(
                            method=method,
                            metric=metric,
                            k=k,
                            mean=mean,
                            se=se,
                            n_test=n_test,
                        )
                    )
                mean, se = self.auc(method, metric)
                rows.append(
                    dict(
                        method=method,
                        metric=metric,
                        k="AUC",
                        mean=mean,
                        se=se,
                        n_test=n_test,
                    )
                )
        return rows


def case_deletion(
    methods: Mapping[str, Any],
    test_inputs: Any,
    train_fn: Optional[TrainFn],
    probability_fn: ProbabilityFn,
    n_train: int,
    ks: Sequence[int] = (10, 20, 50),
    seeds: Sequence[int] = (0, 1, 2),
    random_floor: bool = True,
    test_indices: Optional[Sequence[int]] = None,
    show_progress: bool = True,
    train_many_fn: Optional[TrainManyFn] = None,
    retrains_per_call: int = 16,
) -> DeletionResult:
    r"""
    Case deletion for several influence methods, sharing the full-data models.

    For each method, test example ``i``, ``k`` and seed ``s``: remove the top-k
    proponents (DEL+) or opponents (DEL-) of ``i`` by that method's scores,
    retrain with ``train_fn(kept_indices, s)``, and record
    ``probability_fn(model)[i] - probability_fn(full_model_s)[i]``. Each test
    example gets its own removal set. With ``random_floor``, ``k`` random
    training examples are removed instead, as the noise floor. Identical
    removal sets (for example of two methods that agree) are trained once.

    The work runs in three steps: plan every (removal set, seed) pair, train
    each distinct one, then read off the probability changes. With
    ``train_many_fn``, the retrains go to it in chunks of up to
    ``retrains_per_call`` that all keep the same number of training examples
    (the same number of batches per epoch), so that it can train them side by
    side, for example as one ``torch.func.vmap`` ensemble on a GPU.

    Args:
        methods (dict): Name to a score matrix ``(n_test, n_train)`` or a Captum
                    ``DataInfluence``-like object whose ``influence(test_inputs)``
                    gives one.
        test_inputs: What the objects' ``influence`` takes; unused for tensors.
        train_fn (Callable or None): ``train_fn(train_indices, seed) -> model``,
                    trained from scratch (or from the same initial weights) on
                    the training examples at ``train_indices``. May be None when
                    ``train_many_fn`` is given.
        probability_fn (Callable): ``probability_fn(model) -> (n_test,)`` the
                    probability each test example's ground-truth class gets.
        n_train (int): Size of the training set.
        ks (sequence of int, optional): The k grid. Default: (10, 20, 50)
        seeds (sequence of int, optional): Retraining seeds. Default: (0, 1, 2)
        random_floor (bool, optional): Also remove random examples. Default: True
        test_indices (sequence of int, optional): Evaluate only these rows.
                    Default: None (all)
        show_progress (bool, optional): Show a progress bar. Default: True
        train_many_fn (Callable, optional): ``train_many_fn(list_of_train_indices,
                    list_of_seeds) -> list_of_models``, the batched form of
                    ``train_fn``; model ``j`` must be what ``train_fn`` would give
                    for the ``j``-th pair. Default: None (use ``train_fn``)
        retrains_per_call (int, optional): Largest chunk given to
                    ``train_many_fn``. Default: 16

    Returns:
        result (DeletionResult): The probability changes, with tables and AUCs.
    """
    scores = {name: influence_scores(m, test_inputs) for name, m in methods.items()}
    n_test = next(iter(scores.values())).shape[0] if scores else 0
    rows = list(range(n_test)) if test_indices is None else list(test_indices)
    _check_deletion_inputs(scores, n_train, ks, seeds, rows)
    if train_fn is None and train_many_fn is None:
        raise ValueError("Pass `train_fn` or `train_many_fn` to retrain the model.")
    if retrains_per_call < 1:
        raise ValueError(f"`retrains_per_call` must be >= 1; got {retrains_per_call}.")
    plan = _plan_removals(scores, rows, ks, random_floor, n_train)
    keys = [((), seed) for seed in seeds]
    keys += [(removed, seed) for removed in plan.values() for seed in seeds]
    probabilities = _retrain_all(
        keys,
        n_train,
        train_fn,
        train_many_fn,
        retrains_per_call,
        probability_fn,
        show_progress,
    )
    baseline = torch.stack([probabilities[((), seed)] for seed in seeds])
    retrains = len({(frozenset(removed), seed) for removed, seed in keys})
    result = DeletionResult({}, list(ks), list(seeds), baseline, retrains)
    for (name, metric, a, b), removed in plan.items():
        if name != RANDOM:
            result.removals[(name, metric, rows[a], ks[b])] = list(removed)
        deltas = result.deltas.setdefault(name, {}).setdefault(
            metric, torch.zeros(len(rows), len(ks), len(seeds))
        )
        i = rows[a]
        for c, seed in enumerate(seeds):
            deltas[a, b, c] = probabilities[(removed, seed)][i] - baseline[c, i]
    return result


def _plan_removals(
    scores: Dict[str, Tensor],
    rows: Sequence[int],
    ks: Sequence[int],
    random_floor: bool,
    n_train: int,
) -> Dict[Tuple[str, str, int, int], Tuple[int, ...]]:
    r"""``(method, metric, row position, k position) -> removal set`` (ordered)."""
    plan: Dict[Tuple[str, str, int, int], Tuple[int, ...]] = {}
    for name, matrix in scores.items():
        for metric, proponents in (("DEL+", True), ("DEL-", False)):
            for a, i in enumerate(rows):
                for b, k in enumerate(ks):
                    removed = removal_set(matrix[i], k, proponents)
                    plan[(name, metric, a, b)] = tuple(removed)
    if random_floor:
        for a, i in enumerate(rows):
            for b, k in enumerate(ks):
                generator = torch.Generator().manual_seed(1_000_003 * i + k)
                removed = torch.randperm(n_train, generator=generator)[:k].tolist()
                plan[(RANDOM, RANDOM, a, b)] = tuple(removed)
    return plan


def _retrain_all(
    keys: Sequence[Tuple[Tuple[int, ...], int]],
    n_train: int,
    train_fn: Optional[TrainFn],
    train_many_fn: Optional[TrainManyFn],
    retrains_per_call: int,
    probability_fn: ProbabilityFn,
    show_progress: bool,
) -> Dict[Tuple[Tuple[int, ...], int], Tensor]:
    r"""
    Trains one model per distinct ``(removal set, seed)`` and returns its test
    probabilities, keyed by the removal set as given (order kept) and the seed.
    """
    distinct: Dict[Tuple[FrozenSet[int], int], Tuple[Tuple[int, ...], int]] = {}
    for removed, seed in keys:
        distinct.setdefault((frozenset(removed), seed), (removed, seed))
    jobs = list(distinct.keys())
    bar = tqdm(
        total=len(jobs), desc="Case deletion: retraining", disable=not show_progress
    )

    def kept(drop: FrozenSet[int]) -> List[int]:
        return [j for j in range(n_train) if j not in drop]

    found: Dict[Tuple[FrozenSet[int], int], Tensor] = {}
    if train_many_fn is None:
        for drop, seed in jobs:
            found[(drop, seed)] = _probabilities(
                probability_fn, train_fn(kept(drop), seed)
            )
            bar.update(1)
    else:
        for chunk in _same_size_chunks(jobs, retrains_per_call):
            models = list(
                train_many_fn([kept(drop) for drop, _ in chunk], [s for _, s in chunk])
            )
            if len(models) != len(chunk):
                raise ValueError(
                    f"`train_many_fn` returned {len(models)} models for "
                    f"{len(chunk)} retrains; it must return one per pair, in order."
                )
            for job, model in zip(chunk, models):
                found[job] = _probabilities(probability_fn, model)
            bar.update(len(chunk))
    bar.close()
    return {
        (removed, seed): found[(frozenset(removed), seed)] for removed, seed in keys
    }


def _same_size_chunks(
    jobs: Sequence[Tuple[FrozenSet[int], int]], size: int
) -> List[List[Tuple[FrozenSet[int], int]]]:
    r"""Chunks of at most ``size`` jobs that remove the same number of examples."""
    by_size: Dict[int, List[Tuple[FrozenSet[int], int]]] = {}
    for job in jobs:
        by_size.setdefault(len(job[0]), []).append(job)
    return [
        group[start : start + size]
        for _, group in sorted(by_size.items())
        for start in range(0, len(group), size)
    ]


def _probabilities(probability_fn: ProbabilityFn, model: Model) -> Tensor:
    return probability_fn(model).detach().float().cpu()


def _check_deletion_inputs(
    scores: Dict[str, Tensor],
    n_train: int,
    ks: Sequence[int],
    seeds: Sequence[int],
    rows: Sequence[int],
) -> None:
    if not scores:
        raise ValueError("Pass at least one method to evaluate.")
    shapes = {tuple(s.shape) for s in scores.values()}
    if len(shapes) != 1:
        raise ValueError(f"All score matrices must have the same shape; got {shapes}.")
    n_test, width = shapes.pop()
    if width != n_train:
        raise ValueError(f"Scores have {width} training columns; n_train is {n_train}.")
    if not ks or max(ks) >= n_train:
        raise ValueError(f"The k grid {list(ks)} must be non-empty and below n_train.")
    if not seeds:
        raise ValueError("Pass at least one seed.")
    if any(not 0 <= i < n_test for i in rows):
        raise ValueError(f"`test_indices` must lie in [0, {n_test}).")
