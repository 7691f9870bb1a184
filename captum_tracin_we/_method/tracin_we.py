#!/usr/bin/env python3

from typing import Any, Callable, Iterable, Iterator, List, Optional, Union

import torch
from captum.influence import TracInCPBase
from captum.influence._utils.common import KMostInfluentialResults
from captum.log import log_usage
from torch import Tensor
from torch.nn import CrossEntropyLoss, Module
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

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
from captum_tracin_we._data.same_passes import (
    SamePasses,
)
from captum_tracin_we._data.training_data import (
    TrainingData,
    training_loader,
)
from captum_tracin_we._data.tuple_batches import test_batches
from captum_tracin_we._errors import (
    check_k,
)
from captum_tracin_we._gradients.gradient_source import WordGradientSource
from captum_tracin_we._gradients.token_choice import (
    checked_token_ids,
    weighted_positions,
)
from captum_tracin_we._gradients.token_weights import (
    checked_idf_power,
    counted_token_weights,
)
from captum_tracin_we._index.attachment import checked_index
from captum_tracin_we._index.index_build import BuildOptions, build_word_index
from captum_tracin_we._index.index_store import IndexStore
from captum_tracin_we._index.word_index import WordIndex
from captum_tracin_we._method.training_side import (
    IndexedTraining,
    StreamedTraining,
    add_blocks,
)
from captum_tracin_we._scoring.shared_tokens import (
    WordRows,
)
from captum_tracin_we._scoring.top_k import top_k
from captum_tracin_we._scoring.word_contributions import (
    WordInfluence,
    checked_train_indices,
    pair_contributions,
)

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
    test side alike. With ``idf_power=a`` (TracIn-WE-IDF) each shared token's
    term is weighted by :math:`\mathrm{idf}(w)^a` over the training set, so that
    frequent tokens weigh less without a hand-picked list.

    Layout: the token ids may reach the embedding batch-first ``(B, L)``,
    sequence-first ``(L, B)`` or flattened ``(B * L,)``, positionally or as
    ``input=``; the layout is found by matching them against the batch's integer
    tensors, and positions are mapped back to their examples. Ids that match no
    batch tensor are taken as batch-first when they have one row per example,
    else a :class:`BatchError` is raised.

    Scoring state: every module is put in eval mode and every parameter's
    ``requires_grad`` off during a call, and each module's own mode and each
    flag are restored afterwards.

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
        checkpoints_load_func: Optional[
            Callable[[Module, Any], float]
        ] = load_checkpoint_with_lr,
        embedding_layer: Optional[Union[Module, str]] = None,
        loss_fn: Optional[LossFn] = None,
        batch_size: Union[int, None] = 1,
        test_loss_fn: Optional[LossFn] = None,
        top_k_words: Optional[int] = None,
        exclude_token_ids: Optional[Iterable[int]] = None,
        index: Optional[str] = None,
        idf_power: Optional[float] = None,
    ) -> None:
        r"""
        Args:
            model (torch.nn.Module): The model. Its token ids must pass through
                        one ``nn.Embedding``. Hugging Face sequence classifiers
                        work as they are (their ``.logits`` are used).
            train_dataset (Dataset or DataLoader): The training data. Each batch
                        is either a tuple ``(model inputs..., labels)`` (Captum's
                        convention) or a dict / ``BatchEncoding`` with a
                        ``"labels"`` key (Hugging Face's). Scores are indexed by
                        example position, so a DataLoader must keep the dataset's
                        order: the default sequential sampler and
                        ``drop_last=False`` (a shuffling, subset or reordering
                        sampler raises :class:`TrainingDataError`). A DataLoader
                        over pre-made batches (``batch_size=None``) works;
                        examples are counted, not batches. Data that change
                        between checkpoint passes raise too. A tokenized
                        ``datasets.Dataset`` (columns ``input_ids``, optionally
                        ``attention_mask``, and ``label`` or ``labels``) is
                        batched with ``batch_size`` (16 if None) and padded per
                        batch.
            checkpoints (str, list, or iterator): A ``transformers.Trainer``
                        output folder (its ``checkpoint-<step>`` folders in step
                        order, see :mod:`captum_tracin_we.hf`), a directory (its
                        entries, sorted by name, hidden ones skipped), one
                        checkpoint file or Hugging Face model folder, or a list
                        of checkpoints.
            checkpoints_load_func (Callable, optional): ``f(model, checkpoint)``
                        loads a checkpoint into ``model`` and returns its learning
                        rate, a finite number >= 0 (anything else raises
                        :class:`CheckpointError`). Default (also for None):
                        :func:`load_checkpoint_with_lr`, which reads
                        ``{"model_state_dict", "learning_rate"}`` or a bare state
                        dict (lr 1.0, with a warning) with ``weights_only=True``.
            embedding_layer (torch.nn.Module or str, optional): The token
                        embedding, or its dotted name. Default: None, meaning
                        ``get_input_embeddings()`` where the model has it, else
                        the model's single ``nn.Embedding``.
            loss_fn (Callable, optional): ``loss_fn(logits, labels)`` for training
                        examples, with reduction ``"none"``, ``"sum"`` or
                        ``"mean"``; scores are per example in every case, and do
                        not depend on the batch size: a ``torch.nn`` loss
                        module's own normalisation (class weights and
                        ``ignore_index`` of ``CrossEntropyLoss`` included) is
                        undone exactly, and a loss whose batch normalisation
                        cannot be undone raises :class:`BatchError` saying to
                        pass ``reduction="none"`` or ``"sum"``.
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
                        instead of recomputing it. It is attached with
                        :meth:`attach_index` (``verify=True``). Default: None
            idf_power (float, optional): TracIn-WE-IDF: multiply each shared
                        token's term by :math:`\mathrm{idf}(w)^a`, ``a =
                        idf_power``, with scikit-learn's smooth
                        :math:`\mathrm{idf}(w) = \ln\frac{1 + N}{1 +
                        \mathrm{df}(w)} + 1 \geq 1`; :math:`N` is the number of
                        training examples and :math:`\mathrm{df}(w)` how many
                        of them hold :math:`w` at a counted position (Top-k does
                        not change it). Frequent tokens then weigh less without a
                        hand-picked list; see "Frequent tokens" in the method
                        notes for when to use it. Scores, word contributions and
                        self-influence are weighted alike, and contributions
                        still sum to the score. Default: None (the paper's
                        unweighted TracIn-WE)
        """
        checkpoints = checkpoint_paths(checkpoints)
        if checkpoints_load_func is None:
            checkpoints_load_func = load_checkpoint_with_lr
        self.embedding_layer = find_embedding_layer(model, embedding_layer)
        pad_id = padding_id(model, self.embedding_layer)
        train_dataset = training_loader(train_dataset, batch_size, pad_id, 16)
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
            isinstance(top_k_words, bool)
            or not isinstance(top_k_words, int)
            or top_k_words < 1
        ):
            raise ValueError(
                f"`top_k_words` must be a positive int; got {top_k_words}."
            )
        self.top_k_words = top_k_words
        self.exclude_token_ids = torch.tensor(
            sorted(set(checked_token_ids(exclude_token_ids))), dtype=torch.long
        )
        adapter = ModelAdapter(model, self.embedding_layer)
        self._training = TrainingData(self.train_dataloader, adapter)
        self._source = WordGradientSource(
            adapter, self.top_k_words, self.exclude_token_ids
        )
        self.idf_power = checked_idf_power(idf_power)
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
            inputs (tuple, dict, DataLoader or datasets.Dataset): One test
                        batch in the same convention as the training batches
                        (labels included), a DataLoader of them, or a tokenized
                        ``datasets.Dataset``. The test loss is taken at these
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
        test_batches = self._as_batches(inputs)
        passes = SamePasses(self._training)
        weights = self._idf_weights(passes)
        side = self._training_side(passes)
        test_passes = SamePasses(role="test")
        blocks: List[Tensor] = []
        streamed = isinstance(side, StreamedTraining)
        with self._progress("influence", test_batches, show_progress, streamed) as bar:
            for loaded in self.checkpoint_pass():
                queries = self._query_rows(
                    test_batches, loaded, aggregate, bar, test_passes, weights
                )
                add_blocks(blocks, side.scores(queries, loaded, bar))
        return torch.cat(blocks, dim=1).cpu()

    def _training_side(self, passes: SamePasses) -> Any:
        r"""The attached index, else the training set streamed."""
        if self.index is not None:
            return IndexedTraining(self.index)
        return StreamedTraining(self._source, self._training, self.loss_fn, passes)

    def _query_rows(
        self,
        batches: Iterable[Any],
        loaded: LoadedCheckpoint,
        aggregate: bool,
        bar: Any,
        passes: "SamePasses",
        weights: Optional[Tensor] = None,
    ) -> WordRows:
        digests = passes.start()
        queries = WordRows.cat(
            list(self._source.stream(batches, self.test_loss_fn, "test", bar, digests))
        )
        passes.finish(digests)
        if aggregate:
            queries = queries.summed()
        queries = queries.scaled(loaded.learning_rate)
        return queries if weights is None else queries.weighted(weights)

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
            self_influence_scores (Tensor): ``(n,)`` float32 on CPU, always >= 0
                        (learning rates are checked to be >= 0). Uses
                        ``loss_fn`` (not ``test_loss_fn``), as ``TracInCP``.
        """
        from_index = (
            inputs is None and self.index is not None and self.idf_power is None
        )
        on_training = inputs is None
        batches = self._training.loader if on_training else self._as_batches(inputs)
        training_passes = SamePasses(self._training)
        weights = self._idf_weights(training_passes)
        passes = training_passes if on_training else SamePasses(role="self-influence")
        side: Any = StreamedTraining(self._source, self._training, self.loss_fn, passes)
        if from_index:
            side = IndexedTraining(self.index)
        total: Optional[Tensor] = None
        with self._progress(
            "self influence", batches, show_progress and not from_index, False
        ) as bar:
            for loaded in self.checkpoint_pass():
                part = side.self_scores(batches, loaded, weights, bar)
                total = part if total is None else total + part
        assert total is not None
        return total.float().cpu()

    @log_usage()
    @one_call_per_model
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
            train_indices (Tensor): ``(n_test, m)`` integer indices into the
                        training set (positions, counted in examples), for
                        example ``influence(inputs, k=m).indices``.
            show_progress (bool, optional): Show a progress bar. Default: False

        Returns:
            word_influence (WordInfluence): Scores ``(n_test, m)`` equal to
                        ``influence`` at ``train_indices``, token ids, and
                        per-position contributions of both sides.
        """
        indices = checked_train_indices(train_indices, self.num_train_examples)
        unique, inverse = torch.unique(indices, return_inverse=True)
        test_batches = self._as_batches(inputs)
        pad_id = self._pad_id
        test_c = train_c = None
        test_passes = SamePasses(role="test")
        weights = self._idf_weights(SamePasses(self._training))
        with self._progress(
            "word influence", test_batches, show_progress, False
        ) as bar:
            for loaded in self.checkpoint_pass():
                digests = test_passes.start()
                test = self._source.stacked(
                    test_batches, self.test_loss_fn, "test", bar, pad_id, digests
                )
                test_passes.finish(digests)
                if test.num_examples != indices.shape[0]:
                    raise ValueError(
                        f"`train_indices` has {indices.shape[0]} rows for "
                        f"{test.num_examples} test examples; pass one row per test "
                        "example."
                    )
                train = self._source.stacked(
                    self._training.examples(unique.tolist()),
                    self.loss_fn,
                    "training",
                    bar,
                    pad_id,
                )
                parts = pair_contributions(
                    test.token_ids,
                    loaded.learning_rate * weighted_positions(test, weights),
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

    @one_call_per_model
    def token_weights(self) -> Optional[Tensor]:
        r"""
        The weight of each token's term: ``idf(w) ** idf_power``, counted from
        the training data (one pass that runs the model only up to its
        embedding). Every scoring call counts anew, and checks that its
        gradient passes (or the attached index) saw the same data.

        Returns:
            weights (Tensor or None): ``(vocab_size,)`` float32 indexed by token
                        id, or None without ``idf_power``.
        """
        return self._idf_weights(SamePasses(self._training))

    def _idf_weights(self, passes: SamePasses) -> Optional[Tensor]:
        return counted_token_weights(
            self.idf_power, self._source, self._training, self.model, self.index, passes
        )

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
        Starts the interactive influence explorer on this model and training
        set, in a background thread, and returns its server; in a notebook the
        returned object shows the page. Type a text: its prediction, and its
        top proponents and opponents by TracIn-WE and by the last layer side by
        side; click one for the word view of the pair. The audit view ranks
        the training texts by self-influence. The explorer scores with its own
        copy of the model, so this TracInWE and the model stay free to use
        while it serves (a ``last_layer`` passed in keeps its own model: leave
        it alone meanwhile). Attach an index first
        (:meth:`build_index` or :meth:`attach_index`): queries then read the
        training side from it. Needs ``pip install 'captum_tracin_we[explore]'``.

        Args:
            tokenizer: The model's Hugging Face tokenizer (typed texts are
                        tokenized with it, and token ids shown as words).
            train_texts (list of str): The training texts, one per training
                        example, in the training data's order.
            label_names (list of str, optional): Class names by id. Default:
                        None, meaning ``config.id2label`` where the model has
                        one, else the ids.
            last_layer (bool or DataInfluence, optional): True builds Captum's
                        ``TracInCPFastRandProj`` on the last linear layer
                        (exact, no projection; one pass over the training data
                        per checkpoint, now); a ``DataInfluence`` such as
                        :func:`tracincp_fast` is used as given; False shows
                        TracIn-WE alone. Default: True
            k (int, optional): Proponents and opponents shown per method (the
                        page can change it, up to 50). Default: 10
            max_length (int, optional): Tokens read of a typed text; longer
                        texts are cut, with a visible mark. Default: None,
                        meaning the model's position embeddings or the
                        tokenizer's ``model_max_length``, whichever is smaller.
            encode (callable, optional): ``encode(texts, labels)`` returns one
                        batch in the training data's convention, for models
                        that do not take a tokenizer's ``input_ids`` and
                        ``attention_mask`` with ``labels``. Default: None
            host (str, optional): Address to bind. Default: ``"127.0.0.1"``
                        (this machine only); another address prints a warning.
            port (int, optional): Port; 0 picks a free one. Default: 0
            show_progress (bool, optional): Show progress bars while
                        preparing (self-influence for the audit view).
                        Default: True

        Returns:
            server (ExplorerServer): ``server.url`` is the address;
                        ``server.stop()`` stops it (so does a ``with`` block).
        """
        from captum_tracin_we._explorer.launch import explore

        previous = getattr(self, "_explorer_server", None)
        if previous is not None:  # a re-run notebook cell replaces its server
            previous.stop()
        self._explorer_server = explore(
            self,
            tokenizer,
            train_texts,
            label_names=label_names,
            last_layer=last_layer,
            k=k,
            max_length=max_length,
            encode=encode,
            host=host,
            port=port,
            show_progress=show_progress,
        )
        return self._explorer_server

    def on_model_copy(self) -> "TracInWE":
        r"""
        This TracInWE on a deep copy of the model: the same data, checkpoints,
        settings and attached index. Checkpoints are loaded into the copy, so
        it can score in another thread while this one keeps being used.
        """
        import copy

        names = {module: name for name, module in self.model.named_modules()}
        twin = TracInWE(
            copy.deepcopy(self.model),
            self.train_dataloader,
            self.checkpoints,
            self.checkpoints_load_func,
            embedding_layer=names[self.embedding_layer],
            loss_fn=self.loss_fn,
            batch_size=self.batch_size,
            test_loss_fn=self.test_loss_fn,
            top_k_words=self.top_k_words,
            exclude_token_ids=self.exclude_token_ids.tolist(),
            idf_power=self.idf_power,
        )
        twin.index = self.index  # read-only memory maps, already checked
        return twin

    @property
    def training_data(self) -> TrainingData:
        r"""
        The checked training side, for views and tools that read the training
        set as this method does: ``batches()`` (one pass, in dataset order),
        ``examples(indices)`` (the batches of chosen examples) and
        ``num_examples``.
        """
        return self._training

    @property
    def gradient_source(self) -> WordGradientSource:
        r"""
        The collector of word gradients at :attr:`embedding_layer`:
        ``token_ids(batch, role)`` (the token ids and real positions the
        embedding sees) and ``stream(batches, loss_fn, role, bar)`` (word rows
        at the loaded checkpoint).
        """
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
        example's word gradients as an inverted index by token id in ``path``,
        then attaches it. Queries then only compute the test side.

        The index is bound to what it was built from: the settings, each
        checkpoint's whole state dict and learning rate, the training data
        (a digest of each shard's token ids and labels), the training loss
        (its class and state, such as ``reduction``, ``label_smoothing`` and
        a digest of ``weight``; a function by name, a lambda's body is not
        checked) and the embedding module (its dotted name, size and
        ``padding_idx``); see "What an index is bound to" in
        ``docs/reliability.rst``. The build is
        resumable: every (shard, checkpoint) unit is written atomically and
        skipped only when it is intact and was built from the same settings and
        data, so a build killed part-way resumes where it stopped and gives
        identical scores, and a damaged unit is rebuilt. A folder holding a
        build with other settings or data is refused. Under
        ``torch.distributed`` (for example ``torchrun``), rank ``r`` of ``w``
        builds the shards ``s`` with ``s % w == r`` into the same folder (a
        shared file system across nodes) and rank 0 writes the manifest.
        A resumed build first removes the temporary files a killed one left.

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

        Raises:
            IndexMismatchError: If ``path`` holds a build with other settings,
                        loss, embedding module, checkpoints or data (the
                        message says what differs).
            OSError: If a file cannot be written, a full disk for instance: the
                        message names the file and the folder; free space and
                        run again, the build resumes.
        """
        options = BuildOptions(shard_size, dtype, projection_dim, projection_seed)
        build_word_index(
            IndexStore(path),
            self._training,
            self._source,
            self.loss_fn,
            self.checkpoint_pass,
            options,
            show_progress,
        )
        return self._attach(WordIndex(path, verify=False), check_data=False)

    @one_call_per_model
    def attach_index(self, path: str, verify: bool = True) -> WordIndex:
        r"""
        Attaches an index built by :meth:`build_index` after checking that it
        fits this TracInWE.

        Always checked: the manifest (schema and checksum), the vocabulary,
        dimension, Top-k and excluded ids, the training loss and the embedding
        module the index was built with, the number of checkpoints and of
        training examples, and, when read, each file's size and each array's
        shape. Each checkpoint's whole state dict and learning rate are checked
        against the index every time it is loaded. With ``verify`` (the
        default) also every file's SHA-256 and the training data, shard by
        shard (one pass over the training batches that stops each forward
        pass at the embedding layer); ``verify=False`` skips those two for very
        large indexes.

        Args:
            path (str): The index folder.
            verify (bool, optional): Check checksums and training data.
                        Default: True

        Returns:
            index (WordIndex): The attached index.

        Raises:
            IndexMismatchError: If the index was built for other settings,
                        loss, embedding module, checkpoints or data, or by a
                        version with another index format.
            IndexCorruptedError: If the index is damaged.
        """
        return self._attach(WordIndex(path, verify=verify), check_data=verify)

    def _attach(self, index: WordIndex, check_data: bool) -> WordIndex:
        self.index = checked_index(index, self, check_data)
        return self.index

    def checkpoint_pass(self) -> Iterator[LoadedCheckpoint]:
        r"""
        Loads each checkpoint into :attr:`model` in turn (in order), yielding
        its learning rate with it; every pass of this method goes through it.
        """
        if not getattr(self, "_warned_training", False):
            self._warned_training = True
            warn_if_training(self.model, self.get_name())
        return checkpoint_pass(self.model, self.checkpoints, self.checkpoints_load_func)

    @property
    def _pad_id(self) -> int:
        return padding_id(self.model, self.embedding_layer)

    def _as_batches(self, inputs: Any) -> Union[DataLoader, List[Any]]:
        r"""The test inputs as batches (see ``test_batches``)."""
        return test_batches(inputs, self._pad_id, self.batch_size or 16)

    def _progress(
        self,
        what: str,
        other_batches: Any,
        show_progress: bool,
        with_train: bool = True,
    ) -> Any:
        train_batches = self._training.num_batches if with_train else 0
        others = _length(other_batches)
        total = None
        if train_batches is not None and others is not None:
            total = len(self.checkpoints) * (train_batches + others)
        return tqdm(
            total=total,
            desc=f"Using {self.get_name()} to compute {what}. Processing batch",
            disable=not show_progress,
        )


def _length(batches: Any) -> Optional[int]:
    try:
        return len(batches)
    except TypeError:
        return None
