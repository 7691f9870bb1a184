#!/usr/bin/env python3

from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Union

import torch
from captum.influence import TracInCPBase
from captum.influence._utils.common import KMostInfluentialResults
from captum.log import log_usage
from torch import Tensor
from torch.nn import CrossEntropyLoss, Module
from torch.utils.data import DataLoader, Dataset

from captum_tracin_we._checkpoints.checkpoint_pass import (
    LoadedCheckpoint,
    checkpoint_pass,
    one_call_per_model,
    warn_if_training,
)
from captum_tracin_we._checkpoints.checkpoints import (
    checkpoint_paths,
    load_checkpoint_with_lr,
)
from captum_tracin_we._data.model_adapter import (
    ModelAdapter,
    find_embedding_layer,
    padding_id,
)
from captum_tracin_we._data.same_passes import SamePasses
from captum_tracin_we._data.training_data import TrainingData, training_loader
from captum_tracin_we._data.tuple_batches import test_batches
from captum_tracin_we._errors import check_k
from captum_tracin_we._gradients.gradient_source import WordGradientSource
from captum_tracin_we._gradients.token_choice import (
    checked_token_ids,
    checked_top_k_words,
)
from captum_tracin_we._gradients.token_weights import (
    checked_idf_power,
    counted_token_weights,
)
from captum_tracin_we._index.attachment import attached_index, built_index
from captum_tracin_we._index.index_build import BuildOptions
from captum_tracin_we._index.word_index import WordIndex
from captum_tracin_we._method.influence_pass import InfluencePass, summed_scores
from captum_tracin_we._method.model_copy import on_model_copy
from captum_tracin_we._method.progress import progress_bar
from captum_tracin_we._method.training_side import summed_self_scores
from captum_tracin_we._method.word_pairs import pair_word_influence
from captum_tracin_we._scoring.normalization import checked_normalize
from captum_tracin_we._scoring.top_k import top_k
from captum_tracin_we._scoring.word_contributions import (
    WordInfluence,
    checked_train_indices,
)

LossFn = Union[Module, Callable[..., Tensor]]
LoadFn = Callable[[Module, Any], float]


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

    over the checkpoints :math:`c` (learning rates :math:`\eta_c` from
    ``checkpoints_load_func``) and the tokens :math:`w` the texts share; the
    *word gradient* :math:`\partial \ell(z) / \partial \Theta_w`, row :math:`w`
    of the embedding-table gradient, is the sum of the loss gradients at the
    embedding *output* over the positions holding :math:`w`. This equals
    Captum's ``TracInCP`` with ``layers=[<the embedding>]`` exactly, without
    forming a ``vocab x dim`` gradient. A positive score marks a *proponent*
    (a step on the training example lowers the test loss).

    Padding (``padding_idx``, ``attention_mask`` 0) never counts; special
    tokens count, as in the paper, unless in ``exclude_token_ids``.
    ``top_k_words=k`` (TracIn-WE-Topk) keeps the ``k`` positions of largest
    gradient norm per example and checkpoint, on both sides; ``idf_power=a``
    (TracIn-WE-IDF) weights each shared token by :math:`\mathrm{idf}(w)^a`.
    Token-id layouts, scoring mode and tied embeddings: :doc:`reliability`.
    Each checkpoint is loaded once per call and the training set streamed, so
    memory holds one batch's gradients plus the ``n_test x n_train`` scores.
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
            model (torch.nn.Module): The model; its token ids pass through one
                        ``nn.Embedding`` (Hugging Face classifiers as they are).
            train_dataset (Dataset or DataLoader): Batches ``(inputs...,
                        labels)`` or dicts with ``"labels"``, or a tokenized
                        ``datasets.Dataset``. A DataLoader must keep the
                        dataset's order, and the data must not change between
                        passes (else :class:`TrainingDataError`).
            checkpoints (str, list, or iterator): A ``transformers.Trainer``
                        output folder, a directory, a checkpoint, or a list.
            checkpoints_load_func (Callable, optional): ``f(model, checkpoint)``
                        loads it and returns its learning rate (finite, >= 0).
                        Default: :func:`load_checkpoint_with_lr`.
            embedding_layer (torch.nn.Module or str, optional): The token
                        embedding or its name. Default: None, meaning
                        ``get_input_embeddings()``, else the one ``nn.Embedding``.
            loss_fn (Callable, optional): ``loss_fn(logits, labels)``, reduction
                        ``"none"``, ``"sum"`` or ``"mean"`` (a ``torch.nn``
                        loss's normalisation is undone exactly). Default: None,
                        meaning ``nn.CrossEntropyLoss(reduction="none")``.
            batch_size (int, optional): Batch size for a Dataset; scores do not
                        depend on it. Default: 1
            test_loss_fn (Callable, optional): Test loss. Default: ``loss_fn``
            top_k_words (int, optional): TracIn-WE-Topk: keep this many
                        positions of largest gradient norm per example and
                        checkpoint (the paper uses 10). Default: None (all)
            exclude_token_ids (iterable of int, optional): Ids that never count,
                        for example ``tokenizer.all_special_ids``. Default: None
            index (str, optional): An index folder from :meth:`build_index` to
                        attach (:meth:`attach_index`). Default: None
            idf_power (float, optional): TracIn-WE-IDF: weight each shared
                        token's term by :math:`\mathrm{idf}(w)^a`, scikit-learn's
                        smooth idf over the training set ("Frequent tokens" in
                        :doc:`method`). Default: None (the paper's TracIn-WE)
            normalize (str, optional): ``"cosine"``: both examples' gradients
                        scaled to unit norm at each checkpoint before the inner
                        product (TrackStar's gradient cosine), so each
                        checkpoint adds ``lr * cos`` in ``[-lr, lr]``;
                        ``"train"``: the training gradient only (relative
                        influence). Norms are of the counted positions
                        (``top_k_words``, ``exclude_token_ids``), without IDF
                        weights ("Normalised gradients" in :doc:`method`).
                        Default: None (unnormalised, the paper's TracIn-WE)
        """
        self.embedding_layer = find_embedding_layer(model, embedding_layer)
        pad_id = padding_id(model, self.embedding_layer)
        train = training_loader(train_dataset, batch_size, pad_id, 16)
        paths = checkpoint_paths(checkpoints)
        load = checkpoints_load_func or load_checkpoint_with_lr
        super().__init__(model, train, paths, load, loss_fn, batch_size, test_loss_fn)
        if self.loss_fn is None:
            self.loss_fn = CrossEntropyLoss(reduction="none")
        if self.test_loss_fn is None:
            self.test_loss_fn = self.loss_fn
        self.top_k_words = checked_top_k_words(top_k_words)
        ids = sorted(set(checked_token_ids(exclude_token_ids)))
        self.exclude_token_ids = torch.tensor(ids, dtype=torch.long)
        adapter = ModelAdapter(model, self.embedding_layer)
        self._training = TrainingData(self.train_dataloader, adapter)
        self._source = WordGradientSource(adapter, top_k_words, self.exclude_token_ids)
        self.idf_power = checked_idf_power(idf_power)
        self.normalize = checked_normalize(normalize)
        self.index: Optional[WordIndex] = None
        if index is not None:
            self.attach_index(index)

    @property
    def num_train_examples(self) -> int:
        r"""The number of training examples (not batches)."""
        return self._training.num_examples

    @log_usage()
    @one_call_per_model
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
            inputs (tuple, dict, DataLoader or datasets.Dataset): Test examples
                        as the training batches, labels included (the test loss
                        is taken at them, as in the paper).
            k (int, optional): Return the ``k`` most influential training
                        examples per test example. Default: None (all scores)
            proponents (bool, optional): With ``k``: largest scores if True,
                        most negative (opponents) if False. Default: True
            show_progress (bool, optional): Show a progress bar. Default: False
            aggregate (bool, optional): Sum over the test examples (one row).
                        Default: False

        Returns:
            scores (Tensor): Without ``k``, ``(n_test, n_train)`` float32 on
                        CPU, ``[i, j]`` the influence of training example ``j``
                        on test example ``i``.
            results (KMostInfluentialResults): With ``k``, long ``indices`` and
                        ``influence_scores``, ``(n_test, k)``, largest first.
        """
        assert inputs is not None, "`inputs` is required; see `self_influence`."
        if k is None:
            return self._influence(inputs, show_progress, aggregate)
        return self._get_k_most_influential(
            inputs, k, proponents, show_progress, aggregate
        )

    def _influence(  # type: ignore[override]
        self, inputs: Any, show_progress: bool = False, aggregate: bool = False
    ) -> Tensor:
        batches = self._as_batches(inputs)
        passes = SamePasses(self._training)
        weights = self._idf_weights(passes)
        return summed_scores(self, batches, passes, weights, aggregate, show_progress)

    def influence_pass(self, inputs: Sequence[Any]) -> InfluencePass:
        r"""
        The scores of several test inputs from one checkpoint pass run by the
        caller, each input scored exactly as :meth:`influence` scores it alone
        (bitwise: its own batches, rows and products); each checkpoint is
        loaded once for all of them. An input's error is kept as its result.
        Hold ``model_lock(tracin.model)`` for the whole pass::

            scores = tracin.influence_pass([batch_a, batch_b])
            for loaded in tracin.checkpoint_pass():
                scores.add(loaded)
            scores_a, scores_b = scores.results()

        Args:
            inputs (sequence): Test inputs, each as for :meth:`influence`.

        Returns:
            scores (InfluencePass): ``add(loaded)`` per checkpoint, then
                        ``results()``: per input ``(n_test, n_train)`` float32
                        scores on CPU, or the exception it raised.
        """
        passes = SamePasses(self._training)
        weights = self._idf_weights(passes)
        batches = [self._as_batches(one) for one in inputs]
        return InfluencePass(self, batches, passes, weights, isolate=True)

    def _get_k_most_influential(  # type: ignore[override]
        self,
        inputs: Any,
        k: int,
        proponents: bool = True,
        show_progress: bool = False,
        aggregate: bool = False,
    ) -> KMostInfluentialResults:
        check_k(k, self.num_train_examples)  # before the pass over the data
        scores = self._influence(inputs, show_progress, aggregate)
        return top_k(scores, k, proponents)  # type: ignore[return-value]

    @log_usage()
    @one_call_per_model
    def self_influence(
        self,
        inputs: Optional[Any] = None,
        show_progress: bool = False,
        outer_loop_by_checkpoints: bool = False,
    ) -> Tensor:
        r"""
        TracIn-WE of each example with itself:
        :math:`\sum_c \eta_c \sum_w \|\partial \ell(z) / \partial \Theta_w\|^2`,
        with ``loss_fn`` (not ``test_loss_fn``), as ``TracInCP``.

        Args:
            inputs (tuple, dict or DataLoader, optional): Examples as the
                        training batches. Default: None (the training set).
            show_progress (bool, optional): Show a progress bar. Default: False
            outer_loop_by_checkpoints (bool, optional): Accepted as in
                        ``TracInCP``; no effect on the result. Default: False

        Returns:
            self_influence_scores (Tensor): ``(n,)`` float32 on CPU, >= 0.
        """
        on_training = inputs is None
        batches = self._training.loader if on_training else self._as_batches(inputs)
        passes = SamePasses(self._training)
        weights = self._idf_weights(passes)
        if not on_training:
            passes = SamePasses(role="self-influence")
        index = self.index if on_training and self.idf_power is None else None
        return summed_self_scores(self, batches, index, passes, weights, show_progress)

    @log_usage()
    @one_call_per_model
    def word_influence(
        self,
        inputs: Any,
        train_indices: Tensor,
        show_progress: bool = False,
    ) -> WordInfluence:
        r"""
        Splits the scores of chosen (test, training) pairs over both texts.

        Training position ``p`` holding token ``w`` contributes ``sum_c lr_c *
        <gradient at p, row_w(test text)>``, and test positions likewise; each
        side sums to the score (uncounted positions give 0).

        Args:
            inputs (tuple, dict or DataLoader): ``n_test`` test examples, as for
                        :meth:`influence`.
            train_indices (Tensor): ``(n_test, m)`` training-set indices, such
                        as ``influence(inputs, k=m).indices``.
            show_progress (bool, optional): Show a progress bar. Default: False

        Returns:
            word_influence (WordInfluence): Scores ``(n_test, m)`` equal to
                        ``influence`` at ``train_indices``, token ids, and
                        per-position contributions of both sides.
        """
        indices = checked_train_indices(train_indices, self.num_train_examples)
        batches = self._as_batches(inputs)
        weights = self._idf_weights(SamePasses(self._training))
        with progress_bar(self, "word influence", batches, show_progress, False) as bar:
            return pair_word_influence(self, batches, indices, weights, bar)

    @one_call_per_model
    def token_weights(self) -> Optional[Tensor]:
        r"""
        Each token's weight ``idf(w) ** idf_power``, counted anew from the
        training data (a pass that stops at the embedding).

        Returns:
            weights (Tensor or None): ``(vocab_size,)`` float32 by token id, or
                        None without ``idf_power``.
        """
        return self._idf_weights(SamePasses(self._training))

    def _idf_weights(self, passes: SamePasses) -> Optional[Tensor]:
        args = (self._source, self._training, self.model, self.index, passes)
        return counted_token_weights(self.idf_power, *args)

    def explore(
        self,
        tokenizer: Any,
        train_texts: List[str],
        label_names: Optional[List[str]] = None,
        last_layer: Any = True,
        k: int = 10,
        max_length: Optional[int] = None,
        encode: Optional[Callable[[List[str], Tensor], Any]] = None,
        host: str = "127.0.0.1",
        port: int = 0,
        show_progress: bool = True,
    ) -> Any:
        r"""
        Starts the influence explorer (:doc:`explorer`) on a copy of the model
        in a background thread, replacing a previous one; attach an index first
        for fast queries. Needs ``pip install 'captum_tracin_we[explore]'``.

        Args:
            tokenizer: The model's Hugging Face tokenizer.
            train_texts (list of str): The training texts, in order.
            label_names (list of str, optional): Class names by id. Default:
                        None (``config.id2label``, else the ids)
            last_layer (bool or DataInfluence, optional): Shown side by side:
                        True for Captum's exact last-layer TracIn
                        (``TracInCPFast`` on the classifier head, its training
                        side kept beside the attached index; Captum's
                        ``TracInCPFastRandProj`` without an index), False for
                        none. Default: True
            k (int, optional): Proponents and opponents shown. Default: 10
            max_length (int, optional): Tokens read of a typed text. Default:
                        None (the model's or tokenizer's limit)
            encode (callable, optional): ``encode(texts, labels)`` gives a
                        batch, where a tokenizer's output is not. Default: None
            host (str, optional): Address to bind. Default: ``"127.0.0.1"``
            port (int, optional): Port; 0 picks a free one. Default: 0
            show_progress (bool, optional): Progress bars. Default: True

        Returns:
            server (ExplorerServer): ``server.url``; ``server.stop()`` stops it.
        """
        from captum_tracin_we._explorer.launch import explore

        previous = getattr(self, "_explorer_server", None)
        if previous is not None:
            previous.stop()
        settings = dict(label_names=label_names, last_layer=last_layer, k=k)
        settings.update(max_length=max_length, encode=encode, host=host, port=port)
        self._explorer_server = explore(
            self, tokenizer, train_texts, show_progress=show_progress, **settings
        )
        return self._explorer_server

    def on_model_copy(self) -> "TracInWE":
        r"""This TracInWE (data, checkpoints, settings, index) on a deep copy of
        the model, to score in another thread while this one is in use."""
        return on_model_copy(self)

    @property
    def training_data(self) -> TrainingData:
        r"""The training set as this method reads it: ``batches()`` (in order),
        ``examples(indices)`` and ``num_examples``."""
        return self._training

    @property
    def gradient_source(self) -> WordGradientSource:
        r"""The word-gradient collector at :attr:`embedding_layer`:
        ``token_ids(batch, role)`` and ``stream(batches, loss_fn, role, bar)``."""
        return self._source

    @one_call_per_model
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
        example's word gradients in ``path`` as an inverted index by token id,
        then attaches it; queries then only compute the test side.

        The index is bound to the settings, checkpoints, data, loss and
        embedding module (:doc:`reliability`); a killed build resumes where it
        stopped; under ``torch.distributed`` each rank builds its share of the
        shards (:doc:`scale`).

        Args:
            path (str): Index folder (created if needed).
            shard_size (int, optional): Training examples per shard (whole
                        batches). Default: 10000
            dtype (str, optional): ``"float32"`` or ``"float16"``. Default:
                        ``"float32"``
            projection_dim (int, optional): Store seeded Johnson-Lindenstrauss
                        projections to this size. Default: None (exact)
            projection_seed (int, optional): Projection seed. Default: 0
            show_progress (bool, optional): Show a progress bar. Default: True

        Returns:
            index (WordIndex): The opened index (also attached).

        Raises:
            IndexMismatchError: If ``path`` holds another build (the message
                        says what differs).
            OSError: If a file cannot be written; the message names it.
        """
        options = BuildOptions(shard_size, dtype, projection_dim, projection_seed)
        self.index = built_index(self, path, options, show_progress)
        return self.index

    @one_call_per_model
    def attach_index(self, path: str, verify: bool = True) -> WordIndex:
        r"""
        Attaches an index from :meth:`build_index` once checked to fit: its
        manifest, settings, loss, embedding, sizes, and each checkpoint on load;
        with ``verify`` also file checksums and the training data.

        Args:
            path (str): The index folder.
            verify (bool, optional): Check checksums and training data.
                        Default: True

        Returns:
            index (WordIndex): The attached index.

        Raises:
            IndexMismatchError: If the index was built for something else.
            IndexCorruptedError: If the index is damaged.
        """
        self.index = attached_index(self, path, verify)
        return self.index

    def checkpoint_pass(self) -> Iterator[LoadedCheckpoint]:
        r"""Loads each checkpoint into :attr:`model` in order, yielding it with
        its learning rate; every pass of this method goes through it."""
        if not getattr(self, "_warned_training", False):
            self._warned_training = True
            warn_if_training(self.model, self.get_name())
        return checkpoint_pass(self.model, self.checkpoints, self.checkpoints_load_func)

    def _as_batches(self, inputs: Any) -> Union[DataLoader, List[Any]]:
        pad_id = padding_id(self.model, self.embedding_layer)
        return test_batches(inputs, pad_id, self.batch_size or 16)
