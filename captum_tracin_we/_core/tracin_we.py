#!/usr/bin/env python3

from typing import Any, Callable, Iterable, Iterator, List, Optional, Union

import torch
from captum.influence import TracInCPBase
from captum.influence._utils.common import KMostInfluentialResults
from captum.log import log_usage
from torch import Tensor
from torch.nn import CrossEntropyLoss, Module
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm.auto import tqdm

from captum_tracin_we._utils.checkpoints import (
    checkpoint_paths,
    load_checkpoint_with_lr,
)
from captum_tracin_we._utils.index_ops import (
    build_word_index,
    indexed_scores,
    indexed_self_scores,
    open_word_index,
)
from captum_tracin_we._utils.model_adapter import (
    ModelAdapter,
    find_embedding_layer,
    scoring_mode,
    warn_if_training,
)
from captum_tracin_we._utils.shared_tokens import (
    WordRows,
    self_scores,
    shared_token_scores,
    word_rows,
)
from captum_tracin_we._utils.word_contributions import (
    WordInfluence,
    pair_contributions,
)
from captum_tracin_we._utils.word_gradients import (
    WordGradients,
    collect_word_gradients,
    stack_word_gradients,
)
from captum_tracin_we._utils.word_index import WordIndex

LossFn = Union[Module, Callable[..., Tensor]]


class TracInWE(TracInCPBase):
    r"""
    TracIn-WE: TracIn restricted to the token (word) embedding table, from
    Yeh et al., "First is Better Than Last for Language Data Influence"
    (NeurIPS 2022).

    For a training example :math:`z` and a test example :math:`z'` the score is

    .. math::
        \sum_c \eta_c \sum_{w \in z \cap z'}
        \langle \partial \ell(z) / \partial \Theta_w,\,
        \partial \ell(z') / \partial \Theta_w \rangle

    where :math:`c` runs over the checkpoints, :math:`\eta_c` is the learning rate
    returned by ``checkpoints_load_func``, :math:`w` over the tokens the two
    texts share, and the *word gradient* :math:`\partial \ell(z) / \partial
    \Theta_w` (row :math:`w` of the embedding-table gradient) is the sum of the
    loss gradients at the embedding *output* over the positions of :math:`z`
    that hold token :math:`w`. This equals Captum's ``TracInCP`` with
    ``layers=[<the embedding>]`` exactly, without ever forming a
    ``vocab x dim`` gradient.

    Sign: a positive score marks a *proponent* (a gradient step on the training
    example lowers the test loss), a negative one an *opponent*.

    Positions that count: padding never counts (the embedding's
    ``padding_idx``, and positions where a dict batch's ``attention_mask`` is
    0). Special tokens such as ``[CLS]``/``[SEP]`` count, as in the paper,
    unless listed in ``exclude_token_ids``. With ``top_k_words=k``
    (TracIn-WE-Topk) only the ``k`` counted positions of largest gradient L2
    norm count, chosen per example and per checkpoint, on the training and the
    test side alike.

    Tied input/output embeddings (language-model heads): TracIn-WE is defined on
    the input side only; the gradient that reaches the table through the output
    projection is not included.

    Each checkpoint is loaded once per call; the training set is streamed batch
    by batch, so memory holds one batch's gradients plus the
    ``n_test x n_train`` score matrix.
    """

    def __init__(
        self,
        model: Module,
        train_dataset: Union[Dataset, DataLoader],
        checkpoints: Union[str, List[str], Iterator[Any]],
        checkpoints_load_func: Callable[[Module, Any], float] = load_checkpoint_with_lr,
        embedding_layer: Optional[Union[Module, str]] = None,
        loss_fn: Optional[LossFn] = None,
        batch_size: Union[int, None] = 1,
        test_loss_fn: Optional[LossFn] = None,
        top_k_words: Optional[int] = None,
        exclude_token_ids: Optional[Iterable[int]] = None,
        index: Optional[str] = None,
    ) -> None:
        r"""
        Args:
            model (torch.nn.Module): The model. Its token ids must pass through
                        one ``nn.Embedding``. Hugging Face sequence classifiers
                        work as they are (their ``.logits`` are used).
            train_dataset (Dataset or DataLoader): The training data. Each batch
                        is either a tuple ``(model inputs..., labels)`` (Captum's
                        convention) or a dict / ``BatchEncoding`` with a
                        ``"labels"`` key (Hugging Face's). A DataLoader must not
                        shuffle.
            checkpoints (str, list of str, or iterator): A directory (every file
                        in it), one checkpoint file, or a list of checkpoints.
            checkpoints_load_func (Callable, optional): ``f(model, checkpoint)``
                        loads a checkpoint into ``model`` and returns its learning
                        rate. Default: :func:`load_checkpoint_with_lr`, which
                        reads ``{"model_state_dict", "learning_rate"}`` or a bare
                        state dict (lr 1.0) with ``weights_only=True``.
            embedding_layer (torch.nn.Module or str, optional): The token
                        embedding, or its dotted name. Default: None, meaning
                        ``get_input_embeddings()`` where the model has it, else
                        the model's single ``nn.Embedding``.
            loss_fn (Callable, optional): ``loss_fn(logits, labels)`` for training
                        examples, with reduction ``"none"``, ``"sum"`` or
                        ``"mean"``; scores are per example in every case.
                        Default: None, meaning
                        ``nn.CrossEntropyLoss(reduction="none")`` (unlike
                        ``TracInCP``, where None means the raw model output).
            batch_size (int, optional): Batch size when ``train_dataset`` is a
                        Dataset; ignored for a DataLoader. Scores do not depend
                        on it. Default: 1
            test_loss_fn (Callable, optional): The loss for test examples, for
                        example the logit of one class. Default: None, meaning
                        ``loss_fn``.
            top_k_words (int, optional): TracIn-WE-Topk: keep only the
                        ``top_k_words`` positions of largest gradient L2 norm per
                        example and checkpoint (the paper uses 10). Default: None
                        (all positions).
            exclude_token_ids (iterable of int, optional): Token ids that never
                        count, for example a tokenizer's
                        ``all_special_ids``. Default: None (only padding is
                        excluded).
            index (str, optional): Folder of a word-gradient index built by
                        :meth:`build_index`; ``influence`` and
                        ``self_influence`` then read the training side from it
                        instead of recomputing it. Default: None
        """
        checkpoints = checkpoint_paths(checkpoints)
        _check_dataset(train_dataset)
        super().__init__(
            model,
            train_dataset,
            checkpoints,
            checkpoints_load_func,
            loss_fn,
            batch_size,
            test_loss_fn,
        )
        if self.loss_fn is None:
            self.loss_fn = CrossEntropyLoss(reduction="none")
        if self.test_loss_fn is None:
            self.test_loss_fn = self.loss_fn
        if top_k_words is not None and (
            not isinstance(top_k_words, int) or top_k_words < 1
        ):
            raise ValueError(
                f"`top_k_words` must be a positive int; got {top_k_words}."
            )
        self.top_k_words = top_k_words
        self.embedding_layer = find_embedding_layer(model, embedding_layer)
        self.exclude_token_ids = torch.tensor(
            sorted(set(exclude_token_ids or ())), dtype=torch.long
        )
        self._adapter = ModelAdapter(model, self.embedding_layer)
        self.index: Optional[WordIndex] = None
        if index is not None:
            self.attach_index(index)

    @log_usage()
    def influence(  # type: ignore[override]
        self,
        inputs: Any,
        k: Optional[int] = None,
        proponents: bool = True,
        show_progress: bool = False,
        aggregate: bool = False,
    ) -> Union[Tensor, KMostInfluentialResults]:
        r"""
        TracIn-WE scores of the training examples for test examples.

        Args:
            inputs (tuple, dict or DataLoader): One test batch in the same
                        convention as the training batches (labels included), or
                        a DataLoader of them. The test loss is taken at these
                        labels (the ground truth, as in the paper).
            k (int, optional): If given, return the ``k`` most influential
                        training examples per test example instead of all
                        scores. Must not exceed the training set size.
                        Default: None
            proponents (bool, optional): With ``k``: the ``k`` largest scores
                        (proponents) if True, the ``k`` most negative (opponents)
                        if False. Default: True
            show_progress (bool, optional): Show a tqdm progress bar over
                        checkpoints and batches. Default: False
            aggregate (bool, optional): Sum the scores over all test examples,
                        giving one row. Default: False

        Returns:
            scores (Tensor): If ``k`` is None, ``(n_test, n_train)`` float32 on
                        CPU; entry ``[i, j]`` is the influence of training example
                        ``j`` on test example ``i`` (``(1, n_train)`` with
                        ``aggregate``).
            results (KMostInfluentialResults): If ``k`` is given,
                        ``(indices, influence_scores)``, both ``(n_test, k)`` (or
                        ``(1, k)``), sorted from most to least influential;
                        ``indices`` is a long tensor.
        """
        assert inputs is not None, (
            "`inputs` argument is required. If you wish to calculate self influence "
            "scores, please use the `self_influence` method instead."
        )
        if k is None:
            return self._influence(inputs, show_progress, aggregate)
        return self._get_k_most_influential(
            inputs, k, proponents, show_progress, aggregate
        )

    def _influence(  # type: ignore[override]
        self, inputs: Any, show_progress: bool = False, aggregate: bool = False
    ) -> Tensor:
        if self.index is not None:
            return self._indexed_influence(inputs, show_progress, aggregate)
        test_batches = _as_batches(inputs)
        blocks: List[Tensor] = []
        with (
            self._scoring(),
            self._progress("influence", _length(test_batches), show_progress) as bar,
        ):
            for checkpoint in self.checkpoints:
                learning_rate = self._load(checkpoint)
                queries = WordRows.cat(
                    list(
                        self._streamed_rows(
                            test_batches, self.test_loss_fn, bar, "test"
                        )
                    )
                )
                if aggregate:
                    queries = queries.summed()
                queries = queries.scaled(learning_rate)
                train_rows = self._streamed_rows(
                    self.train_dataloader, self.loss_fn, bar
                )
                for i, train in enumerate(train_rows):
                    block = shared_token_scores(queries, train)
                    if i < len(blocks):
                        blocks[i] += block
                    else:
                        blocks.append(block)
        return torch.cat(blocks, dim=1).cpu()

    def _get_k_most_influential(  # type: ignore[override]
        self,
        inputs: Any,
        k: int,
        proponents: bool = True,
        show_progress: bool = False,
        aggregate: bool = False,
    ) -> KMostInfluentialResults:
        train_size = _length(self.train_dataloader.dataset)
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"`k` must be a positive int or None; got {k!r}.")
        if train_size is not None and k > train_size:
            raise ValueError(_k_too_large(k, train_size))
        scores = self._influence(inputs, show_progress, aggregate)
        if k > scores.shape[1]:
            raise ValueError(_k_too_large(k, scores.shape[1]))
        values, indices = torch.topk(scores, k, dim=1, largest=proponents)
        return KMostInfluentialResults(indices.long(), values)

    @log_usage()
    def self_influence(
        self,
        inputs: Optional[Any] = None,
        show_progress: bool = False,
        outer_loop_by_checkpoints: bool = False,
    ) -> Tensor:
        r"""
        TracIn-WE of each example with itself:
        :math:`\sum_c \eta_c \sum_w \|\partial \ell(z) / \partial \Theta_w\|^2`.

        Args:
            inputs (tuple, dict or DataLoader, optional): Examples in the
                        training-batch convention. Default: None, meaning the
                        training set.
            show_progress (bool, optional): Show a tqdm progress bar.
                        Default: False
            outer_loop_by_checkpoints (bool, optional): Accepted for
                        compatibility with ``TracInCP``; TracInWE always loads
                        each checkpoint once and streams the batches inside, so
                        the result is the same either way. Default: False

        Returns:
            self_influence_scores (Tensor): ``(n,)`` float32 on CPU, always >= 0.
                        Uses ``loss_fn`` (not ``test_loss_fn``), as ``TracInCP``.
        """
        if inputs is None and self.index is not None:
            return self._indexed_self_influence()
        batches: Iterable[Any] = (
            self.train_dataloader if inputs is None else _as_batches(inputs)
        )
        n_batches = _length(batches)
        total: Optional[Tensor] = None
        with (
            self._scoring(),
            self._progress(
                "self influence", n_batches, show_progress, with_train=False
            ) as bar,
        ):
            for checkpoint in self.checkpoints:
                learning_rate = self._load(checkpoint)
                scores = torch.cat(
                    [
                        self_scores(rows)
                        for rows in self._streamed_rows(batches, self.loss_fn, bar)
                    ]
                )
                total = (
                    learning_rate * scores
                    if total is None
                    else total + (learning_rate * scores)
                )
        assert total is not None
        return total.cpu()

    @log_usage()
    def word_influence(
        self,
        inputs: Any,
        train_indices: Tensor,
        show_progress: bool = False,
    ) -> WordInfluence:
        r"""
        Splits the TracIn-WE scores of chosen (test, training) pairs over the
        positions of both texts.

        Position ``p`` of the training text, holding token ``w``, contributes
        ``sum_c lr_c * <gradient at p, row_w(test text)>``, and position ``q`` of
        the test text contributes ``sum_c lr_c * <gradient at q, row_w(training
        text)>``. Padding, excluded ids and (with Top-k) positions not kept
        contribute 0. Each side sums to the score.

        Args:
            inputs (tuple, dict or DataLoader): ``n_test`` test examples, as for
                        :meth:`influence`.
            train_indices (Tensor): ``(n_test, m)`` long indices into the
                        training set, for example ``influence(inputs,
                        k=m).indices``.
            show_progress (bool, optional): Show a progress bar. Default: False

        Returns:
            word_influence (WordInfluence): Scores ``(n_test, m)`` equal to
                        ``influence`` at ``train_indices``, token ids, and
                        per-position contributions of both sides.
        """
        indices = torch.as_tensor(train_indices, dtype=torch.long).cpu()
        if indices.dim() != 2:
            raise ValueError(
                "`train_indices` must be (n_test, m), one row of training indices per "
                f"test example; got shape {tuple(indices.shape)}."
            )
        train_size = _length(self.train_dataloader.dataset)
        if indices.numel() and (
            int(indices.min()) < 0
            or (train_size is not None and int(indices.max()) >= train_size)
        ):
            raise ValueError(
                f"`train_indices` must lie in [0, {train_size}); got values from "
                f"{int(indices.min())} to {int(indices.max())}."
            )
        unique, inverse = torch.unique(indices, return_inverse=True)
        test_batches = _as_batches(inputs)
        test_c = train_c = None
        with (
            self._scoring(),
            self._progress(
                "word influence", _length(test_batches), show_progress, with_train=False
            ) as bar,
        ):
            for checkpoint in self.checkpoints:
                learning_rate = self._load(checkpoint)
                test = self._stacked_gradients(
                    test_batches, self.test_loss_fn, "test", bar
                )
                if test.num_examples != indices.shape[0]:
                    raise ValueError(
                        f"`train_indices` has {indices.shape[0]} rows for "
                        f"{test.num_examples} test examples; pass one row per test "
                        "example."
                    )
                train = self._stacked_gradients(
                    self._train_batches(unique.tolist()), self.loss_fn, "training", bar
                )
                parts = pair_contributions(
                    test.token_ids,
                    learning_rate * test.gradients,
                    train.token_ids[inverse],
                    train.gradients[inverse],
                )
                if test_c is None:
                    test_c, train_c = parts
                else:
                    test_c, train_c = test_c + parts[0], train_c + parts[1]
        return WordInfluence(
            scores=train_c.sum(-1).cpu(),
            train_indices=indices,
            test_token_ids=test.token_ids.cpu(),
            train_token_ids=train.token_ids[inverse].cpu(),
            test_contributions=test_c.cpu(),
            train_contributions=train_c.cpu(),
            test_mask=test.real.cpu(),
            train_mask=train.real[inverse].cpu(),
            test_labels=test.labels.cpu(),
            train_labels=train.labels[inverse].cpu(),
        )

    def build_index(
        self,
        path: str,
        shard_size: int = 10000,
        dtype: str = "float32",
        projection_dim: Optional[int] = None,
        projection_seed: int = 0,
        show_progress: bool = True,
    ) -> WordIndex:
        r"""
        Runs the training pass once per checkpoint and stores every training
        example's word gradients as an inverted index by token id in ``path``,
        then attaches it. Queries then only compute the test side.

        The build is resumable: every (shard, checkpoint) unit is written
        atomically and skipped when found finished, so a build killed part-way
        resumes where it stopped and gives identical scores. Under
        ``torch.distributed`` (for example ``torchrun``), rank ``r`` of ``w``
        builds the shards ``s`` with ``s % w == r`` into the same folder (a
        shared file system across nodes) and rank 0 writes the manifest.

        Args:
            path (str): Index folder (created if needed).
            shard_size (int, optional): Training examples per shard (rounded to
                        whole batches). Default: 10000
            dtype (str, optional): ``"float32"`` or ``"float16"`` storage of the
                        word gradients. Default: ``"float32"``
            projection_dim (int, optional): Store seeded Johnson-Lindenstrauss
                        projections of the word gradients to this dimension;
                        dot products stay unbiased. Default: None (exact)
            projection_seed (int, optional): Seed of the projection. Default: 0
            show_progress (bool, optional): Show a progress bar. Default: True

        Returns:
            index (WordIndex): The opened index (also attached).
        """
        return build_word_index(
            self,
            path,
            shard_size,
            dtype,
            projection_dim,
            projection_seed,
            show_progress,
        )

    def attach_index(self, path: str, verify: bool = True) -> WordIndex:
        r"""
        Attaches an index built by :meth:`build_index` after checking that it
        fits this model and these settings (vocabulary, dimension, Top-k,
        excluded ids, number of checkpoints; each checkpoint's embedding table is
        checked against the index when it is loaded). With ``verify`` every
        file's checksum is checked, which detects corrupted shards.
        """
        self.index = open_word_index(self, path, verify)
        return self.index

    def _indexed_influence(
        self, inputs: Any, show_progress: bool, aggregate: bool
    ) -> Tensor:
        test_batches = _as_batches(inputs)
        with (
            self._scoring(),
            self._progress(
                "influence from the index",
                _length(test_batches),
                show_progress,
                with_train=False,
            ) as bar,
        ):
            return indexed_scores(self, test_batches, aggregate, bar)

    def _indexed_self_influence(self) -> Tensor:
        assert self.index is not None
        return indexed_self_scores(self.index)

    def _scoring(self) -> Any:
        if not getattr(self, "_warned_training", False) and self.model.training:
            self._warned_training = True
            warn_if_training(self.model, self.get_name())
        return scoring_mode(self.model)

    def _load(self, checkpoint: Any) -> float:
        learning_rate = self.checkpoints_load_func(self.model, checkpoint)
        self.model.eval()
        try:
            learning_rate = float(learning_rate)
        except (TypeError, ValueError):
            raise ValueError(
                "`checkpoints_load_func` must return the learning rate (a float); got "
                f"{learning_rate!r} for checkpoint {checkpoint!r}."
            ) from None
        if learning_rate != learning_rate or abs(learning_rate) == float("inf"):
            raise ValueError(
                f"Checkpoint {checkpoint!r} has learning rate {learning_rate}."
            )
        return learning_rate

    def _streamed_rows(
        self, batches: Iterable[Any], loss_fn: Any, bar: Any, role: str = "training"
    ) -> Iterator[WordRows]:
        first = 0
        for batch in batches:
            rows = self._batch_rows(batch, loss_fn, first, role)
            first += rows.num_examples
            bar.update(1)
            yield rows
        if first == 0:
            raise ValueError(f"The {role} data is empty; pass at least one example.")

    def _batch_rows(self, batch: Any, loss_fn: Any, first: int, role: str) -> WordRows:
        return word_rows(self._batch_gradients(batch, loss_fn, first, role))

    def _batch_gradients(
        self, batch: Any, loss_fn: Any, first: int, role: str
    ) -> WordGradients:
        try:
            return collect_word_gradients(
                self._adapter,
                batch,
                loss_fn,
                first_index=first,
                top_k_words=self.top_k_words,
                exclude_token_ids=self.exclude_token_ids,
            )
        except ValueError as error:
            raise ValueError(f"In the {role} data: {error}") from None

    def _stacked_gradients(
        self, batches: Iterable[Any], loss_fn: Any, role: str, bar: Any
    ) -> WordGradients:
        parts, first = [], 0
        for batch in batches:
            parts.append(self._batch_gradients(batch, loss_fn, first, role))
            first += parts[-1].num_examples
            bar.update(1)
        if first == 0:
            raise ValueError(f"The {role} data is empty; pass at least one example.")
        return stack_word_gradients(parts, self._pad_id)

    @property
    def _pad_id(self) -> int:
        padding_idx = self.embedding_layer.padding_idx
        return 0 if padding_idx is None else int(padding_idx)

    def _train_batches(self, indices: List[int]) -> Iterator[Any]:
        r"""Batches of the chosen training examples, by random access."""
        loader = self.train_dataloader
        if not hasattr(loader.dataset, "__getitem__") or loader.batch_size is None:
            raise ValueError(
                "word_influence needs to fetch training examples by index: pass a "
                "map-style Dataset (with __getitem__), or a DataLoader with a "
                "batch_size over one."
            )
        size = loader.batch_size
        for start in range(0, len(indices), size):
            chunk = indices[start : start + size]
            yield loader.collate_fn([loader.dataset[i] for i in chunk])

    def _progress(
        self,
        what: str,
        other_batches: Optional[int],
        show_progress: bool,
        with_train: bool = True,
    ) -> Any:
        train_batches = self.train_dataloader_len if with_train else 0
        total = None
        if train_batches is not None and other_batches is not None:
            total = len(self.checkpoints) * (train_batches + other_batches)
        return tqdm(
            total=total,
            desc=f"Using {self.get_name()} to compute {what}. Processing batch",
            disable=not show_progress,
        )


def _as_batches(inputs: Any) -> Union[DataLoader, List[Any]]:
    r"""A DataLoader as it is (it is iterated once per checkpoint), else one batch."""
    return inputs if isinstance(inputs, DataLoader) else [inputs]


def _length(dataset: Any) -> Optional[int]:
    try:
        return len(dataset)
    except TypeError:
        return None


def _check_dataset(train_dataset: Union[Dataset, DataLoader]) -> None:
    if isinstance(train_dataset, DataLoader):
        if isinstance(train_dataset.sampler, RandomSampler):
            raise ValueError(
                "The training DataLoader shuffles; influence scores are indexed by "
                "position in the training set, so pass a DataLoader with "
                "shuffle=False."
            )
        dataset = train_dataset.dataset
    else:
        dataset = train_dataset
    if _length(dataset) == 0:
        raise ValueError("The training set is empty; TracIn needs examples to score.")


def _k_too_large(k: int, train_size: int) -> str:
    return (
        f"k={k} is larger than the training set ({train_size} examples). Use "
        f"k <= {train_size}, or k=None for all scores."
    )
