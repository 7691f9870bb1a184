#!/usr/bin/env python3

r"""
The ``captum-tracin-we explain`` job: a user's own fine-tuned model and data
in, the most influential training texts (and the words that carry their
influence) out, side by side with Captum's last-layer ``TracInCPFast``.
"""

import os
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

from captum_tracin_we._baselines.captum_methods import tracincp_fast
from captum_tracin_we._baselines.representation_similarity import (
    RepresentationSimilarity,
)
from captum_tracin_we._baselines.stored_last_layer import stored_tracincp_fast
from captum_tracin_we._data.model_layers import layer_groups
from captum_tracin_we._errors import TracInWEError
from captum_tracin_we._evaluation.comparison import compare_influence
from captum_tracin_we._files.atomic_files import (
    check_output_folder,
    check_writable_folder,
)
from captum_tracin_we._files.data_files import TextData, read_text_data
from captum_tracin_we._files.labels import label_ids
from captum_tracin_we._files.model_folder import (
    ModelFolder,
)
from captum_tracin_we._gradients.token_frequency import frequent_token_ids
from captum_tracin_we._index.index_format import MANIFEST
from captum_tracin_we._jobs.explain_data import (  # noqa: F401 (re-exported)
    Encoded,
    _collate,
    _loader,
    _max_length,
    _report_truncation,
    encode,
    load_training,
    max_length_note,
)
from captum_tracin_we._jobs.explain_settings import ExplainSettings
from captum_tracin_we._jobs.report import (
    Explanation,
    TestText,
    format_sides,
    write_report,
)
from captum_tracin_we._method.tracin_layers import TracInLayers
from captum_tracin_we._method.tracin_we import TracInWE
from captum_tracin_we._scoring.top_k import both_sides

LAST_LAYER = "TracInCPFast (last layer)"
REPSIM = "RepSim (last hidden state)"
REPORT_FILES = ("report.html", "scores.json")


def run_explain(settings: ExplainSettings) -> Dict[str, Any]:
    r"""
    Runs the explain job and writes ``report.html`` and ``scores.json`` (and
    the figures embedded in the report) into ``settings.out``, each written
    whole and renamed into place. The output and index folders are checked
    before the model loads.

    Returns:
        summary (dict): What ``scores.json`` holds.

    Raises:
        TracInWEError: If ``out`` or ``index`` is a file, cannot be created or
                    written, or an output file is a symbolic link (before any
                    work), or for bad input.
        OSError: If an output cannot be written (the message names the file).
    """
    started = time.perf_counter()
    check_request(settings)
    prepared = prepare_explain(settings, read_tests=True)
    return answer_explain(prepared, settings, started)


@dataclass
class PreparedExplain:
    r"""
    What every question to one model and training set needs, loaded once:
    the model folder, the training data as the model sees it, TracIn-WE with
    its index, and the side-by-side methods. A warm process
    (``--keep-warm``) keeps one and answers many questions with it.
    """

    settings: ExplainSettings
    folder: ModelFolder
    names: List[str]
    train: TextData
    train_labels: List[int]
    max_length: int
    encoded: Encoded
    tracin: TracInWE
    methods: Dict[str, Any]
    seconds: Dict[str, float]
    tests: Optional[List[TestText]] = None  # the first question's, read early
    questions: int = 0  # answered so far


def check_request(settings: ExplainSettings) -> None:
    r"""
    Checks a question's own settings (test texts, ``--top-k``, the output
    folder) before any work.

    Raises:
        ValueError: If there are no test texts, an empty one, or ``top_k < 1``.
        TracInWEError: If ``out`` cannot hold the report.
    """
    if not settings.test and not settings.texts:
        raise ValueError("Give test texts: --test FILE, or --text '...' (repeatable).")
    if any(not text.strip() for text in settings.texts):
        raise ValueError("A --text is empty; give each test text some words.")
    if settings.top_k < 1:
        raise ValueError(f"--top-k must be at least 1; got {settings.top_k}.")
    check_output_folder(settings.out, REPORT_FILES, "--out")


def prepare_explain(
    settings: ExplainSettings, read_tests: bool = False
) -> PreparedExplain:
    r"""
    Loads the model folder and training data, and sets up TracIn-WE (its index
    attached or built) and the side-by-side methods (the last layer's stored
    training side read or computed with ``--index``).

    Args:
        settings (ExplainSettings): The job's settings.
        read_tests (bool, optional): Also read and check ``settings``' test
                    texts, before the index is built (a bad test file fails
                    early). Default: False

    Returns:
        prepared (PreparedExplain): With ``seconds`` holding "load" and "index".
    """
    started = time.perf_counter()
    check_index_folder(settings.index)
    folder, names, train, train_labels, max_length, encoded = load_training(settings)
    tests = _test_texts(settings, folder, names, max_length) if read_tests else None
    if settings.layer_group:
        group_layers(folder.model, settings.layer_group)  # before any scoring
    seconds = {"load": time.perf_counter() - started}
    tracin = _tracin(settings, folder, encoded)
    methods: Dict[str, Any] = {}
    if settings.last_layer and settings.index:
        methods[LAST_LAYER] = stored_tracincp_fast(
            tracin, show_progress=settings.show_progress
        )
    methods.update(extra_methods(settings, folder, encoded))
    seconds["index"] = time.perf_counter() - started - seconds["load"]
    return PreparedExplain(
        settings, folder, names, train, train_labels, max_length, encoded, tracin,
        methods, seconds, tests,
    )  # fmt: skip


def answer_explain(
    prepared: PreparedExplain,
    request: ExplainSettings,
    started: Optional[float] = None,
) -> Dict[str, Any]:
    r"""
    Explains the test texts of ``request`` (its ``test``, ``texts``, ``top_k``
    and ``out``; the rest is ``prepared``'s) and writes the report.

    Args:
        prepared (PreparedExplain): From :func:`prepare_explain`.
        request (ExplainSettings): The question.
        started (float, optional): ``time.perf_counter()`` at the start of the
                    command, for "Done in". Default: None (now)

    Returns:
        summary (dict): What ``scores.json`` holds.
    """
    started = time.perf_counter() if started is None else started
    settings, folder, names = prepared.settings, prepared.folder, prepared.names
    tracin, train_encoded = prepared.tracin, prepared.encoded
    query_started = time.perf_counter()
    # A prepared job answering again (a warm process) loads nothing new.
    phases = dict(prepared.seconds) if not prepared.questions else _no_loading()
    prepared.questions += 1
    tests, prepared.tests = prepared.tests, None  # read early for the first
    if tests is None or request is not settings:
        tests = _test_texts(request, folder, names, prepared.max_length)
        phases["load"] += time.perf_counter() - query_started
    query_started = time.perf_counter()
    test_batch = _collate(folder.tokenizer, [t.features for t in tests])
    timer = time.perf_counter()
    scores = tracin.influence(test_batch, show_progress=settings.show_progress)
    seconds = {"TracIn-WE": time.perf_counter() - timer}
    k = min(request.top_k, scores.shape[1])
    all_scores = {"TracIn-WE": scores}
    if settings.last_layer and LAST_LAYER not in prepared.methods:
        timer = time.perf_counter()
        all_scores[LAST_LAYER] = captum_last_layer_scores(
            settings, folder, train_encoded, test_batch
        )
        seconds[LAST_LAYER] = time.perf_counter() - timer
    for name, method in prepared.methods.items():
        timer = time.perf_counter()
        all_scores[name] = method.influence(
            test_batch, show_progress=settings.show_progress
        )
        seconds[name] = time.perf_counter() - timer
    methods = {name: both_sides(matrix, k) for name, matrix in all_scores.items()}
    comparison = None
    if scores.shape[1] >= 2:  # top-k lists of at most half the training set
        comparison = compare_influence(
            all_scores,
            test_batch,
            k=min(10, scores.shape[1] // 2),
            train_labels=prepared.train_labels,
        )
        comparison.seconds.update(seconds)  # the full scores, as measured here
    pairs = torch.cat(
        [methods["TracIn-WE"][0].indices, methods["TracIn-WE"][1].indices], 1
    )
    words = tracin.word_influence(test_batch, pairs)
    phases["query"] = time.perf_counter() - query_started
    print()
    given = [t.given_label is not None for t in tests]
    print(format_sides(words, k, folder.tokenizer, names, given))
    described = replace(settings, test=request.test, texts=request.texts)
    explanation = Explanation(
        title="TracIn-WE: which training texts made the model say this",
        settings=_settings_rows(
            described,
            folder,
            prepared.train,
            train_encoded,
            prepared.max_length,
            tracin,
        ),  # fmt: skip
        label_names=names,
        train_texts=train_encoded.seen_texts,
        train_truncated=train_encoded.truncated,
        train_labels=prepared.train_labels,
        train_rows=list(range(len(prepared.train))),
        tests=tests,
        methods=methods,
        scores=all_scores,
        words=words,
        accuracy=_accuracy(tests),
        comparison=comparison,
        seconds=phases,
    )
    summary = write_report(explanation, folder.tokenizer, request.out)
    print(f"Done in {time.perf_counter() - started:.1f} s.")
    return summary


def _no_loading() -> Dict[str, float]:
    return {"load": 0.0, "index": 0.0}


def check_index_folder(index: Optional[str]) -> None:
    r"""
    Checks, before any work, that an index folder can be attached (it holds a
    ``manifest.json``) or built (it is or can become a writable folder).

    Raises:
        TracInWEError: If ``index`` is a file, lies below a file, or cannot be
                    written where a build is needed.
    """
    if index and not os.path.isfile(os.path.join(index, MANIFEST)):
        check_writable_folder(index, "--index")


def _test_texts(
    settings: ExplainSettings, folder: ModelFolder, names: List[str], max_length: int
) -> List[TestText]:
    r"""Test texts from --test and --text; unlabeled ones take the prediction."""
    texts: List[str] = []
    given: List[Optional[int]] = []
    if settings.test:
        data = read_text_data(
            settings.test, settings.text_column, settings.label_column, False
        )
        texts += data.texts
        if data.labels is None:
            given += [None] * len(data)
        else:
            given += label_ids(data.labels, names, repr(settings.test))
    texts += list(settings.texts)
    given += [None] * len(settings.texts)
    placeholder = [0] * len(texts)
    encoded = encode(folder.tokenizer, texts, placeholder, max_length)
    _report_truncation("test", encoded, max_length)
    probabilities = _probabilities(folder, encoded.features)
    tests = []
    for i, text in enumerate(texts):
        predicted = int(probabilities[i].argmax())
        label = given[i] if given[i] is not None else predicted
        encoded.features[i]["labels"] = label
        tests.append(
            TestText(
                text=text,
                seen_text=encoded.seen_texts[i],
                truncated=encoded.truncated[i],
                label=label,
                given_label=given[i],
                predicted=predicted,
                probabilities=probabilities[i].tolist(),
                features=encoded.features[i],
            )
        )
    return tests


def _probabilities(folder: ModelFolder, features: List[Dict[str, Any]]) -> Tensor:
    batch = _collate(folder.tokenizer, features)
    batch.pop("labels", None)
    with torch.no_grad():
        logits = folder.model(**batch).logits
    return logits.softmax(-1)


def _excluded_ids(settings: ExplainSettings, folder: ModelFolder, encoded: Encoded):
    excluded = set()
    if settings.exclude_special_tokens:
        excluded |= set(folder.tokenizer.all_special_ids)
    if settings.exclude_frequent:
        ids = [torch.tensor(f["input_ids"]) for f in encoded.features]
        pad = folder.tokenizer.pad_token_id
        ignore = [pad] if pad is not None else []
        frequent = frequent_token_ids(ids, settings.exclude_frequent, ignore)
        excluded |= set(frequent)
    return sorted(excluded)


def _tracin(settings: ExplainSettings, folder: ModelFolder, encoded: Encoded):
    tracin = TracInWE(
        folder.model,
        _loader(folder.tokenizer, encoded, settings.batch_size),
        folder.checkpoints,
        folder.load_func,
        batch_size=None,
        top_k_words=settings.top_k_words,
        exclude_token_ids=_excluded_ids(settings, folder, encoded),
        idf_power=settings.idf_power,
        normalize=settings.normalize,
    )
    if settings.index:
        manifest = os.path.join(settings.index, MANIFEST)
        if os.path.isfile(manifest):
            tracin.attach_index(settings.index)
            print(f"Using the index in {settings.index}.")
        else:
            tracin.build_index(settings.index, show_progress=settings.show_progress)
            print(f"Built the index in {settings.index}; later runs reuse it.")
    return tracin


def captum_last_layer_scores(
    settings: ExplainSettings,
    folder: ModelFolder,
    encoded: Encoded,
    test_batch: Dict[str, Tensor],
) -> Tensor:
    r"""
    The side-by-side last layer without an index: Captum's ``TracInCPFast``
    on the classifier head, which reads the whole training set; all
    ``(n_test, n_train)`` scores from one call (proponents and opponents are
    read from them). With ``--index`` the report uses
    :func:`stored_tracincp_fast` instead: the same scores, its training side
    kept beside the index, so a new text costs its own passes only.
    """
    fast = tracincp_fast(
        folder.model,
        _loader(folder.tokenizer, encoded, settings.batch_size),
        folder.checkpoints,
        folder.load_func,
    )
    # Captum nests its bars, which print cursor codes into a log file.
    nested = settings.show_progress and sys.stderr.isatty()
    if settings.show_progress and not nested:
        print(f"Computing {LAST_LAYER} (Captum)...", flush=True)
    return fast.influence(test_batch, show_progress=nested)


def _accuracy(tests: List[TestText]) -> Optional[float]:
    labelled = [t for t in tests if t.given_label is not None]
    if not labelled:
        return None
    return sum(t.predicted == t.given_label for t in labelled) / len(labelled)


def group_layers(model: Any, group: str) -> List[str]:
    r"""
    The layers of a named group of :func:`layer_groups` (``"attention
    early"``, ``"attention middle"``, ``"attention late"``, ``"classifier"``).

    Raises:
        TracInWEError: If the model has no such group (the names are listed).
    """
    groups = layer_groups(model)
    if group not in groups:
        raise TracInWEError(
            f"--layer-group {group!r} is not a layer group of this model; choose "
            f"one of {sorted(groups)}."
        )
    return groups[group]


def layer_method(settings: ExplainSettings, folder: ModelFolder, encoded: Encoded):
    return TracInLayers(
        folder.model,
        _loader(folder.tokenizer, encoded, settings.batch_size),
        folder.checkpoints,
        group_layers(folder.model, settings.layer_group or ""),
        folder.load_func,
        batch_size=None,
        normalize=settings.normalize,
    )


def extra_methods(
    settings: ExplainSettings, folder: ModelFolder, encoded: Encoded
) -> Dict[str, Any]:
    r"""
    The methods shown beside TracIn-WE and the last layer, name -> method:
    exact TracIn on ``--layer-group`` (with the same ``--normalize``), and
    RepSim with ``--repsim`` (the cosine of mean-pooled last hidden states of
    the final model, :class:`RepresentationSimilarity`).
    """
    extra: Dict[str, Any] = {}
    if settings.layer_group:
        extra[f"TracIn ({settings.layer_group})"] = layer_method(
            settings, folder, encoded
        )
    if settings.repsim:
        extra[REPSIM] = RepresentationSimilarity(
            folder.model,
            _loader(folder.tokenizer, encoded, settings.batch_size),
        )
    return extra


def _last_layer_note(settings: ExplainSettings) -> str:
    r"""The report's "Last layer" row: shown or not, and where its training side
    comes from."""
    if not settings.last_layer:
        return "not shown (--no-last-layer)"
    if settings.index:
        return "TracInCPFast, training side kept in the index folder"
    return "TracInCPFast (Captum), training side recomputed"


def _excluded_note(settings: ExplainSettings, excluded: int) -> str:
    r"""The report's "Excluded tokens" row, in words."""
    if not excluded:
        return "none: every token counts, special tokens included"
    parts = []
    if settings.exclude_special_tokens:
        parts.append("the special tokens")
    if settings.exclude_frequent:
        parts.append(f"the {settings.exclude_frequent} most frequent tokens")
    return f"{excluded} tokens: {' and '.join(parts)}"


def _settings_rows(settings, folder, train: TextData, encoded, max_length, tracin):
    excluded = tracin.exclude_token_ids.numel()
    return {
        "Model": folder.description,
        "Training data": f"{settings.train}: {len(train)} texts, "
        f"{sum(encoded.truncated)} truncated",
        "Test data": ", ".join(
            part
            for part in (
                settings.test or "",
                f"{len(settings.texts)} --text" if settings.texts else "",
            )
            if part
        ),
        "Max length": max_length_note(settings, folder, max_length),
        "Top-k words": str(settings.top_k_words or "all positions (TracIn-WE)"),
        "Token weighting": "none (the paper's TracIn-WE)"
        if settings.idf_power is None
        else f"idf^{settings.idf_power:g} (TracIn-WE-IDF)",
        "Excluded tokens": _excluded_note(settings, excluded),
        "Index": settings.index or "none (training side recomputed)",
        "Last layer": _last_layer_note(settings),
        "Gradient normalisation": settings.normalize or "none (the paper's TracIn-WE)",
        "Layer group": settings.layer_group or "none",
        "RepSim": "shown (final model)" if settings.repsim else "not shown",
    }
