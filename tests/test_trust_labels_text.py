#!/usr/bin/env python3

r"""
Labels and texts as a hostile user writes them (issue 21, items 4 and 11):
one label rule for every file format (CSV, TSV, JSON Lines, a ``datasets``
folder), label names that look like ids refused with the fix, special-token
text (``[PAD]``, ``[SEP]``) read as text, and repeated columns refused.
"""

import csv
import json
import os
import shutil

import pytest

pytest.importorskip("datasets")
pytest.importorskip("accelerate")

import datasets  # noqa: E402

from captum_tracin_we._cli import main  # noqa: E402
from captum_tracin_we._errors import TracInWEError  # noqa: E402
from captum_tracin_we._files.data_files import DataFileError, read_text_data  # noqa: E402
from captum_tracin_we._files.labels import (  # noqa: E402
    LabelError,
    label_ids,
    names_from_data,
)
from captum_tracin_we._jobs.explain import encode  # noqa: E402
from tests.test_explain import NAMES, _texts, _write_csv, trainer_run  # noqa: E402

TEXTS = ["goal team", "market bank", "chip phone", "coach match"]
SPECIAL = "goal [PAD] team [SEP] match [CLS] coach <s> player"


def _write(folder, form, texts, labels):
    r"""The same rows as ``form``: csv, tsv, jsonl (labels as given), or a
    datasets folder (column type from the labels)."""
    path = os.path.join(folder, f"data_{form}")
    if form in ("csv", "tsv"):
        path += f".{form}"
        with open(path, "w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream, delimiter="\t" if form == "tsv" else ",")
            writer.writerow(["text", "label"])
            writer.writerows(zip(texts, labels))
    elif form == "jsonl":
        path += ".jsonl"
        with open(path, "w", encoding="utf-8") as stream:
            for text, label in zip(texts, labels):
                stream.write(json.dumps({"text": text, "label": label}) + "\n")
    else:
        datasets.Dataset.from_dict({"text": texts, "label": labels}).save_to_disk(path)
    return path


FORMS = ["csv", "tsv", "jsonl", "datasets"]
# One label column written four ways; each means the ids 0, 1, 2, 1.
SPELLINGS = {
    "int": [0, 1, 2, 1],
    "float": [0.0, 1.0, 2.0, 1.0],
    "text": ["0", "1", "2", "1"],
    "float text": ["0.0", "1.0", "2", " 1 "],
    "LABEL_": ["LABEL_0", "LABEL_1", "LABEL_2", "LABEL_1"],
}


def _ids(tmp_path, form, labels, names):
    data = read_text_data(_write(str(tmp_path), form, TEXTS, labels))
    return label_ids(data.labels, names, repr(data.source))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
@pytest.mark.parametrize("names", [NAMES, ["0", "1", "2"], ["neg", "1", "pos"]])
def test_numbers_are_ids_in_every_format(tmp_path, form, spelling, names):
    assert _ids(tmp_path, form, SPELLINGS[spelling], names) == [0, 1, 2, 1]


@pytest.mark.parametrize("form", FORMS)
def test_names_map_by_name_in_every_format(tmp_path, form):
    labels = ["tech", "business", "sport", " tech "]
    assert _ids(tmp_path, form, labels, NAMES) == [2, 0, 1, 2]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("spelling", ["int", "float", "text", "float text"])
def test_number_names_that_are_not_their_ids_are_refused_in_every_format(
    tmp_path, form, spelling
):
    stars = ["1", "2", "3"]  # star ratings: name "1" is id 0
    with pytest.raises(LabelError) as refused:
        _ids(tmp_path, form, SPELLINGS[spelling], stars)
    message = str(refused.value)
    assert "gives labels as numbers" in message
    assert "label names ['1', '2', '3'] hold numbers that differ from their ids" in (
        message
    )
    assert "(name '1' is id 0)" in message and "the name or the id" in message
    assert "Rename the labels in the model's config.json" in message
    assert "{'0': 'class 1', '1': 'class 2'}" in message
    assert "LABEL_<id> (LABEL_0 for the name '1')" in message
    assert isinstance(refused.value, TracInWEError)


@pytest.mark.parametrize("form", FORMS)
def test_ids_written_label_id_work_with_number_names(tmp_path, form):
    stars = ["1", "2", "3"]
    assert _ids(tmp_path, form, SPELLINGS["LABEL_"], stars) == [0, 1, 2, 1]


def test_one_number_name_off_its_id_makes_numbers_ambiguous():
    with pytest.raises(LabelError, match=r"\(name '1' is id 0\)"):
        label_ids(["pos", 1], ["1", "pos"], "data")
    assert label_ids(["pos", "LABEL_0"], ["1", "pos"], "data") == [1, 0]
    with pytest.raises(LabelError, match=r"name 'LABEL_1' is id 0"):
        label_ids(["LABEL_1"], ["LABEL_1", "LABEL_0"], "data")


def test_unknown_labels_are_named_whatever_their_type():
    for bad in ([3], ["3.0"], [1.5], [True], ["-1"], ["maybe"]):
        with pytest.raises(LabelError, match="labels the model does not know"):
            label_ids(bad, ["neg", "pos", "mid"], "data")


def test_labels_for_a_new_model_follow_the_same_rule():
    assert names_from_data(["1", "2.0", 3, 0.0]) == (
        ["0", "1", "2", "3"],
        [1, 2, 3, 0],
    )
    assert names_from_data(["pos", "neg"]) == (["neg", "pos"], [1, 0])
    with pytest.raises(LabelError, match=r"mix numbers and names \(\['1', 'pos'\]\)"):
        names_from_data(["pos", "1"])
    with pytest.raises(LabelError, match="must be 0 or more; the data has -1"):
        names_from_data(["-1", "1"])


@pytest.mark.parametrize("extension", ["csv", "tsv"])
def test_a_header_that_repeats_a_column_is_refused(tmp_path, extension):
    path = str(tmp_path / f"twice.{extension}")
    sep = "\t" if extension == "tsv" else ","
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(sep.join(["text", "label", "text"]) + "\n")
        stream.write(sep.join(["goal team", "sport", "market bank"]) + "\n")
    with pytest.raises(DataFileError) as refused:
        read_text_data(path)
    assert str(refused.value) == (
        f"The header of {path!r} names the column 'text' more than once "
        "(columns: ['text', 'label', 'text']); which one holds the data is "
        "unclear. Rename or remove the repeated column."
    )
    with open(path, "w", encoding="utf-8") as stream:  # unnamed columns: fine
        stream.write(sep.join(["text", "label", "", ""]) + "\n")
        stream.write(sep.join(["goal team", "sport", "", ""]) + "\n")
    assert read_text_data(path).texts == ["goal team"]


def test_a_json_line_that_repeats_a_field_is_refused(tmp_path):
    path = str(tmp_path / "twice.jsonl")
    with open(path, "w", encoding="utf-8") as stream:
        stream.write('{"text": "goal team", "label": "sport"}\n')
        stream.write('{"text": "goal team", "label": "sport", "text": "bank"}\n')
    with pytest.raises(DataFileError, match="Line 2 of .* names the field 'text'"):
        read_text_data(path)


# ---------------------------------------------------------------- with a model
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("labels_text")
    rows = [(SPECIAL, "sport")] + _texts(11, seed=2)
    corpus = [t for t, _ in rows]
    run_dir = trainer_run(root / "run", rows, corpus, 24, 3, 2e-3)
    return root, run_dir, _write_csv(root / "train.csv", rows), rows


def test_special_token_text_is_text_not_padding(run):
    from transformers import AutoTokenizer

    _, run_dir, _, _ = run
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(run_dir, "checkpoint-6"))
    encoded = encode(tokenizer, [SPECIAL, "goal [PAD]"], [0, 0], 24)
    specials = set(tokenizer.all_special_ids)
    for feature in encoded.features:
        inner = feature["input_ids"][1:-1]  # the text, between [CLS] and [SEP]
        assert not specials & set(inner) - {tokenizer.unk_token_id}
        assert all(feature["attention_mask"])
    assert encoded.truncated == [False, False]
    assert "pad" in encoded.seen_texts[1]


def test_explain_and_the_explorer_read_special_token_text_as_text(run, capsys):
    from captum_tracin_we._jobs.explore import ExploreSettings, prepare_explorer

    root, run_dir, train_csv, _ = run
    out = str(root / "out")
    argv = ["explain", "--model", run_dir, "--train", train_csv, "--no-progress"]
    main(argv + ["--text", "goal [PAD] [PAD] team", "--out", out, "--top-k", "2"])
    with open(os.path.join(out, "scores.json"), encoding="utf-8") as stream:
        test = json.load(stream)["tests"][0]
    assert not test["truncated"] and "pad" in test["text_seen_by_model"]
    assert "truncated" not in capsys.readouterr().out
    settings = ExploreSettings(
        model=run_dir,
        train=train_csv,
        index=str(root / "index"),
        max_length=24,
        show_progress=False,
        last_layer=False,
    )
    explorer = prepare_explorer(settings)
    assert not explorer._examples[0].truncated  # the training text with [PAD]
    pad = explorer.tokenizer.pad_token_id
    assert pad not in explorer._examples[0].token_ids
    answer = explorer.query("goal [PAD] team [SEP]", k=2)
    assert not answer["truncated"]
    assert "pad" in [w["w"] for w in answer["words"]]


def test_explain_refuses_number_names_that_are_not_their_ids(run, tmp_path, capsys):
    root, run_dir, train_csv, rows = run
    stars = str(tmp_path / "stars")
    shutil.copytree(run_dir, stars)
    for folder in os.listdir(stars):
        config = os.path.join(stars, folder, "config.json")
        if os.path.isfile(config):
            with open(config, encoding="utf-8") as stream:
                values = json.load(stream)
            values["id2label"] = {"0": "1", "1": "2", "2": "3"}
            values["label2id"] = {"1": 0, "2": 1, "3": 2}
            with open(config, "w", encoding="utf-8") as stream:
                json.dump(values, stream)
    numbers = _write_csv(
        tmp_path / "stars.csv", [(t, str(1 + NAMES.index(y))) for t, y in rows]
    )
    argv = ["explain", "--model", stars, "--train", numbers, "--no-progress"]
    with pytest.raises(SystemExit):
        main(argv + ["--out", str(tmp_path / "out"), "--text", "goal"])
    error = capsys.readouterr().err
    assert "gives labels as numbers ('1', '2', '3')" in error
    assert "(name '1' is id 0)" in error and "LABEL_0 for the name '1'" in error
    assert not os.path.exists(tmp_path / "out" / "scores.json")
