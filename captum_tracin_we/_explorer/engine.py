#!/usr/bin/env python3

r"""
The influence explorer's engine. One typed text in; its prediction and its top
proponents and opponents by TracIn-WE (from the index) and by a last-layer
method out, as JSON-ready dicts. Also the word view of one (text, training
example) pair, and the training examples ranked by self-influence. The web
layer (:mod:`captum_tracin_we._explorer.server`) only routes requests here.

The model is used by one request at a time (a lock). Queries that arrive
while it is busy are answered together (:mod:`~captum_tracin_we._explorer.
query_batching`, :mod:`~captum_tracin_we._explorer.method_views`): one
checkpoint pass for all of them, each text on its own batch, so each answer
is bitwise the one it gets alone. Everything returned is data, never markup:
the front end puts training text into the page as text.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from captum_tracin_we._checkpoints.checkpoint_pass import model_lock, scoring_mode
from captum_tracin_we._data.model_adapter import ModelAdapter
from captum_tracin_we._explorer.answers import _Query, _TestText
from captum_tracin_we._explorer.audit import _plain_self_influence, audit_order
from captum_tracin_we._explorer.batch_bounds import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_WAIT,
    checked_max_batch,
    checked_max_wait,
)
from captum_tracin_we._explorer.method_views import TRACIN_WE, answer_queries
from captum_tracin_we._explorer.query_batching import QueryBatcher
from captum_tracin_we._explorer.requests import (  # split out
    Limits,
    RequestError,
    _check_finite,
    _checked_int,
    checked_methods,
    checked_text,
)
from captum_tracin_we._explorer.texts import (
    Encoder,  # split out
    _colored,
    _counts,
    _label_names,
    check_training_texts,
    full_token_ids,
    hf_encoder,
)
from captum_tracin_we._files.model_folder import model_token_limit
from captum_tracin_we._scoring.word_contributions import (
    is_special_token,
    merge_subwords,
    pair_tokens,
    token_strings,
)


@dataclass
class _Example:
    r"""One training example as the model sees it."""

    token_ids: List[int]
    label: int
    truncated: bool


class Explorer:
    r"""
    Answers the explorer's questions about one model and its training set.

    Args:
        tracin (TracInWE): TracIn-WE on the model and training data, ideally
                    with an index attached (queries then read the training
                    side from it).
        tokenizer: The Hugging Face tokenizer of the model.
        train_texts (sequence of str): The training texts, in the training
                    data's order, one per training example.
        label_names (sequence of str, optional): Class names by id. Default:
                    None, meaning the model's ``config.id2label`` where it has
                    one, else the ids.
        last_layer (DataInfluence, optional): The side-by-side method, for
                    example :func:`stored_tracincp_fast` on ``tracin`` (which
                    shares its checkpoint pass) or
                    :func:`tracincp_fast_rand_proj` (its ``influence`` must
                    take ``k`` and ``proponents``). Default: None (TracIn-WE
                    only)
        last_layer_name (str, optional): Its name in the views.
        extra_methods (dict, optional): More methods side by side, name ->
                    ``DataInfluence`` on the same model, for example
                    :class:`~captum_tracin_we.TracInLayers` on a layer group.
                    Default: None
        encode (callable, optional): ``encode(texts, labels)`` returns one
                    batch in the training data's convention. Default: None,
                    meaning the tokenizer's ``input_ids`` and
                    ``attention_mask`` with ``labels`` (Hugging Face models).
        max_length (int, optional): Tokens the model sees of a typed text; the
                    rest is cut, with a mark. Default: None, meaning the
                    model's position embeddings or the tokenizer's
                    ``model_max_length``, whichever is smaller (512 if neither).
        k (int, optional): Default proponents and opponents per method.
                    Default: 10
        description (str, optional): What the header shows about the model.
        limits (Limits, optional): Request bounds. Default: ``Limits()``
        max_batch (int, optional): The most queries answered together, in
                    ``[1, 4096]``: queries that arrive while the model is busy
                    wait, then share one checkpoint pass (each checkpoint
                    loaded once for all of them), each text on its own test
                    batch. 1 answers each query alone. Default: 1 (batching
                    did not lower the 8-client p95: :doc:`explorer`)
        max_wait (float, optional): The most seconds a batch waits for more
                    queries before it runs, in ``[0, 10]``, only under load
                    (the last batch held more queries than are waiting); a
                    lone query never waits. Default: 0.03

    Both bounds are attributes (``explorer.max_batch``, ``explorer.max_wait``)
    and may be changed between queries. Each query's answer is bitwise the
    one it gets alone, whichever queries waited beside it: every text runs on
    its own single-text batch and is scored as alone; only checkpoint loads
    (and index reads) are shared, by TracIn-WE and by a stored last layer on
    the same TracInWE (:class:`~captum_tracin_we.StoredTracInCPFast`). Other
    methods are called text by text.
    """

    def __init__(
        self,
        tracin: Any,
        tokenizer: Any,
        train_texts: Sequence[str],
        label_names: Optional[Sequence[str]] = None,
        last_layer: Optional[Any] = None,
        last_layer_name: str = "Last layer",
        encode: Optional[Encoder] = None,
        max_length: Optional[int] = None,
        k: int = 10,
        description: str = "",
        limits: Optional[Limits] = None,
        extra_methods: Optional[Dict[str, Any]] = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_wait: float = DEFAULT_MAX_WAIT,
    ) -> None:
        self.tracin = tracin
        self.tokenizer = tokenizer
        self.limits = limits or Limits()
        self.max_length = max_length or model_token_limit(tracin.model, tokenizer)
        self._hidden_ids = self._special_ids_but_unknown()  # left out of lists
        self._default_encoder = encode is None
        self.encode = encode or hf_encoder(tokenizer, self.max_length)
        self.methods: Dict[str, Any] = {TRACIN_WE: tracin}
        if last_layer is not None:
            self.methods[last_layer_name] = last_layer
        for name, method in (extra_methods or {}).items():
            if str(name) in self.methods:
                raise ValueError(f"Method name {name!r} is taken; give another.")
            self.methods[str(name)] = method
        self.k = self._checked_k(k)
        self.description = description
        self.train_texts = [str(text) for text in train_texts]
        self._lock = model_lock(tracin.model)  # shared with every scoring call
        self._adapter = ModelAdapter(tracin.model, tracin.embedding_layer)
        self._examples: List[_Example] = []
        self.label_names: List[str] = []
        self._given_names = list(label_names) if label_names is not None else None
        self._self_influence: Optional[Tensor] = None
        self._train_predicted: Optional[Tensor] = None
        self.max_batch = checked_max_batch(max_batch)
        self.max_wait = checked_max_wait(max_wait)
        self._batcher: QueryBatcher = QueryBatcher(
            self._answer_queries, self.max_batch, self.max_wait
        )

    # ----------------------------------------------------------------- setup
    def prepare(self, show_progress: bool = True) -> "Explorer":
        r"""
        Reads the training data once (token ids and labels, the model run only
        up to its embedding), predicts every training example, and computes
        self-influence for the audit view (from the index where attached).

        Returns:
            explorer (Explorer): ``self``.
        """
        with self._lock:
            read = self._read_training()
            if len(read) != len(self.train_texts):
                raise ValueError(
                    f"{len(self.train_texts)} training texts for {len(read)} "
                    "training examples; pass the texts of the training data, one "
                    "per example, in its order."
                )
            full = self._full_ids(self.train_texts)
            if full is not None and self._default_encoder:
                self._check_texts(read, full)
            self._examples = [
                _Example(ids, label, full is not None and len(full[i]) > len(ids))
                for i, (ids, label) in enumerate(read)
            ]
            self._self_influence = _plain_self_influence(self.tracin, show_progress)
            _check_finite(self._self_influence.tolist(), "Self-influence")
            logits = self._training_logits()
            self._train_predicted = logits.argmax(-1)
            self.label_names = _label_names(
                self._given_names, self.tracin.model, int(logits.shape[-1])
            )
        return self

    def info(self) -> Dict[str, Any]:
        r"""What the front end needs to draw its controls."""
        return {
            "description": self.description,
            "labels": self.label_names,
            "methods": list(self.methods),
            "num_train": len(self._examples),
            "k": self.k,
            "max_length": self.max_length,
            "limits": {
                "max_text_chars": self.limits.max_text_chars,
                "max_k": self.limits.max_k,
                "max_page": self.limits.max_page,
            },
            "label_counts": _counts([e.label for e in self._examples]),
        }

    # ----------------------------------------------------------------- views
    def query(
        self,
        text: Any,
        label: Any = None,
        k: Any = None,
        methods: Any = None,
    ) -> Dict[str, Any]:
        r"""
        A typed text's prediction, and its top proponents and opponents by each
        method.

        Args:
            text (str): The text (at most ``limits.max_text_chars``).
            label (int, optional): The class whose loss is explained. Default:
                        None, meaning the model's prediction.
            k (int, optional): Proponents and opponents per method. Default:
                        None, meaning ``self.k``.
            methods (list of str, optional): Which methods. Default: all.

        Returns:
            view (dict): ``text``, ``truncated``, ``words`` (the text as the
                        model sees it), ``label``, ``predicted``,
                        ``probabilities``, and ``methods``: per method its
                        ``proponents`` and ``opponents`` (each with ``index``,
                        ``score``, ``label``, ``words`` with ``shared`` marks,
                        ``truncated``) and ``seconds``.
        """
        self._require_prepared()
        asked = _Query(
            text=self._checked_text(text),
            label=None if label is None else self._checked_label(label),
            k=self.k if k is None else self._checked_k(k),
            names=self._checked_methods(methods),
        )
        if self.max_batch <= 1:  # one at a time: the same run, with one text
            (answer,) = answer_queries(self, [asked])
            if isinstance(answer, Exception):
                raise answer
            return answer
        self._batcher.max_batch = self.max_batch  # the bounds as set now
        self._batcher.max_wait = self.max_wait
        return self._batcher.submit(asked)

    @property
    def batches(self) -> List[Any]:
        r"""The last 1000 query batches as they ran, oldest first: each a
        :class:`~captum_tracin_we._explorer.query_batching.BatchRecord`
        (``size``, ``waited`` seconds)."""
        return list(self._batcher.batches)

    def pair(self, text: Any, index: Any, label: Any = None) -> Dict[str, Any]:
        r"""
        The word view of a typed text and training example ``index``: each
        word's contribution on both sides; each side sums to the score.

        Returns:
            view (dict): ``score``, ``test`` and ``train`` sides (``words``
                        with ``value`` and Captum's ``color``), ``index`` and
                        the training example's ``label`` and ``text``.
        """
        self._require_prepared()
        text = self._checked_text(text)
        index = self._checked_index(index)
        with self._lock:
            test = self._test(text, label)
            words = self.tracin.word_influence(test.batch, torch.tensor([[index]]))
        return {
            "kind": "pair",
            **test.summary(self.label_names),
            **self._pair_sides(words, index),
        }

    def self_pair(self, index: Any) -> Dict[str, Any]:
        r"""The word view of training example ``index`` with itself: the words
        that make its self-influence."""
        self._require_prepared()
        index = self._checked_index(index)
        with self._lock:
            batch = self._training_batch(index)
            words = self.tracin.word_influence(batch, torch.tensor([[index]]))
        example = self._examples[index]
        return {
            "kind": "self",
            "label": example.label,
            "label_name": self.label_names[example.label],
            "self_influence": float(self._self_influence[index]),
            **self._pair_sides(words, index),
        }

    def audit(
        self,
        label: Any = None,
        disagree: Any = False,
        offset: Any = 0,
        limit: Any = 50,
    ) -> Dict[str, Any]:
        r"""
        Training examples ranked by self-influence, largest first: where
        mislabeled and odd examples surface.

        Args:
            label (int, optional): Only examples with this label. Default: all
            disagree (bool, optional): Only examples whose prediction differs
                        from their label. Default: False
            offset (int, optional): Rank of the first row. Default: 0
            limit (int, optional): Rows (at most ``limits.max_page``).
                        Default: 50

        Returns:
            view (dict): ``total`` matching examples and ``rows``, each with
                        ``rank``, ``index``, ``label``, ``predicted``,
                        ``self_influence`` and ``words``.
        """
        self._require_prepared()
        label = None if label is None else self._checked_label(label)
        offset = _checked_int(offset, "offset", 0, 10**12)
        limit = _checked_int(limit, "limit", 1, self.limits.max_page)
        if not isinstance(disagree, bool):
            raise RequestError("`disagree` must be true or false.")
        labels = [example.label for example in self._examples]
        chosen = audit_order(
            self._self_influence, labels, self._train_predicted, label, disagree
        )
        rows = []
        for rank, i in enumerate(chosen[offset : offset + limit], start=offset + 1):
            example = self._examples[i]
            rows.append(
                {
                    "rank": rank,
                    **self._train_row(i, set()),
                    "predicted": int(self._train_predicted[i]),
                    "predicted_name": self.label_names[int(self._train_predicted[i])],
                    "self_influence": float(self._self_influence[i]),
                    "label": example.label,
                }
            )
        return {
            "kind": "audit",
            "label": label,
            "disagree": disagree,
            "offset": offset,
            "total": len(chosen),
            "rows": rows,
        }

    # --------------------------------------------------------------- helpers
    def _answer_queries(self, queries: List[_Query]) -> List[Any]:
        return answer_queries(self, queries)

    def _test(self, text: str, label: Any) -> "_TestText":
        probabilities = self._probabilities(text)
        predicted = int(probabilities.argmax())
        chosen = predicted if label is None else self._checked_label(label)
        batch = self.encode([text], torch.tensor([chosen]))
        ids, real = self._token_ids(batch, "test")
        seen = ids[0][real[0]].tolist()
        return _TestText(
            text=text,
            batch=batch,
            token_ids=seen,
            counted=set(seen) - set(self.tracin.exclude_token_ids.tolist()),
            words=self._words(seen, set()),
            truncated=self._truncated(text, len(seen)),
            label=chosen,
            predicted=predicted,
            probabilities=probabilities.tolist(),
        )

    def _train_row(self, index: int, shared_ids: set) -> Dict[str, Any]:
        example = self._examples[index]
        return {
            "index": index,
            "label": example.label,
            "label_name": self.label_names[example.label],
            "words": self._words(example.token_ids, shared_ids),
            "truncated": example.truncated,
        }

    def _words(self, token_ids: List[int], shared_ids: set) -> List[Dict[str, Any]]:
        r"""Words of a text, special tokens left out (except the unknown token),
        each marked shared when one of its tokens counts in the test text too."""
        hidden = self._hidden_ids
        kept = [t for t in token_ids if t not in hidden]
        tokens = token_strings(kept, self.tokenizer)
        flags = [1.0 if t in shared_ids else 0.0 for t in kept]
        words, shared = merge_subwords(tokens, flags, self.tokenizer, name_pieces=True)
        if not hidden:  # a plain callable: hide what looks special
            pairs = [(w, s) for w, s in zip(words, shared) if not is_special_token(w)]
            words, shared = [w for w, _ in pairs], [s for _, s in pairs]
        return [{"w": w, "shared": s > 0} for w, s in zip(words, shared)]

    def _special_ids_but_unknown(self) -> set:
        special = set(getattr(self.tokenizer, "all_special_ids", None) or [])
        return special - {getattr(self.tokenizer, "unk_token_id", None)}

    def _pair_sides(self, words: Any, index: int) -> Dict[str, Any]:
        sides = {}
        for side in ("test", "train"):
            tokens, values = pair_tokens(words, 0, 0, self.tokenizer, side)
            merged = merge_subwords(tokens, values, self.tokenizer, name_pieces=True)
            sides[side] = _colored(*merged)
        example = self._examples[index]
        return {
            "index": index,
            "score": float(words.scores[0, 0]),
            "train_label": example.label,
            "train_label_name": self.label_names[example.label],
            "train_text": self.train_texts[index],
            "train_truncated": example.truncated,
            "test_words": sides["test"],
            "train_words": sides["train"],
        }

    def _probabilities(self, text: str) -> Tensor:
        batch = self.encode([text], torch.zeros(1, dtype=torch.long))
        args, kwargs, _, _ = self._adapter.split(batch)
        with scoring_mode(self.tracin.model), torch.no_grad():
            logits = self._adapter.logits(args, kwargs)
        return logits.float().softmax(-1)[0].cpu()

    def _token_ids(self, batch: Any, role: str) -> Tuple[Tensor, Tensor]:
        with scoring_mode(self.tracin.model), torch.no_grad():
            ids, real, _, _ = self.tracin.gradient_source.token_ids(batch, role)
        return ids.cpu(), real.cpu()

    def _read_training(self) -> List[Tuple[List[int], int]]:
        r"""Each training example's real token ids and label, in order."""
        read = []
        for batch in self.tracin.training_data.batches():
            ids, real = self._token_ids(batch, "training")
            labels = torch.as_tensor(self._adapter.split(batch)[2]).reshape(-1)
            for row, mask, label in zip(ids, real, labels.tolist()):
                read.append((row[mask].tolist(), int(label)))
        return read

    def _training_logits(self) -> Tensor:
        parts = []
        with scoring_mode(self.tracin.model), torch.no_grad():
            for batch in self.tracin.training_data.batches():
                args, kwargs, _, _ = self._adapter.split(batch)
                parts.append(self._adapter.logits(args, kwargs).float().cpu())
        return torch.cat(parts)

    def _training_batch(self, index: int) -> Any:
        return next(iter(self.tracin.training_data.examples([index])))

    def _truncated(self, text: str, seen: int) -> bool:
        r"""Whether the model saw fewer tokens of ``text`` than it has."""
        full = self._full_ids([text])
        return full is not None and len(full[0]) > seen

    def _full_ids(self, texts: List[str]) -> Optional[List[List[int]]]:
        return full_token_ids(self.tokenizer, texts)

    def _check_texts(
        self, read: List[Tuple[List[int], int]], full: List[List[int]]
    ) -> None:
        check_training_texts(self.tokenizer, self.train_texts, read, full)

    # ------------------------------------------------------------ validation
    def _require_prepared(self) -> None:
        if self._self_influence is None:
            raise RuntimeError(
                "The explorer is not prepared; call explorer.prepare() first."
            )

    def _checked_text(self, text: Any) -> str:
        return checked_text(text, self.limits.max_text_chars, self.max_length)

    def _checked_k(self, k: Any) -> int:
        return _checked_int(k, "k", 1, self.limits.max_k)

    def _checked_label(self, label: Any) -> int:
        return _checked_int(label, "label", 0, len(self.label_names) - 1)

    def _checked_index(self, index: Any) -> int:
        return _checked_int(index, "index", 0, len(self._examples) - 1)

    def _checked_methods(self, methods: Any) -> List[str]:
        return checked_methods(methods, list(self.methods))
