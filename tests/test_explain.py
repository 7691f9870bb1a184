#!/usr/bin/env python3

r"""
``captum-tracin-we explain`` on a real Trainer run with a tokenizer, a CSV
with text labels and long texts, an index reused across runs, and the errors
a new user meets, each naming the file and the fix.
"""

import csv
import json
import os
import random
import shutil
import time

import pytest
import torch

pytest.importorskip("datasets")
pytest.importorskip("accelerate")

from captum_tracin_we._cli import main  # noqa: E402
from tests.helpers import chromium, chromium_flags  # noqa: E402

TOPICS = {
    "business": "market shares profit bank trade economy",
    "sport": "match goal team season coach player",
    "tech": "software chip phone internet computer data",
}
NAMES = sorted(TOPICS)
HOSTILE = "<script>document.title='pwned'</script> goal <img src=x onerror=alert(1)>"


def _texts(n, seed, long_every=0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = NAMES[i % 3]
        words = TOPICS[label].split() + "the a of and to".split()
        size = 40 if long_every and i % long_every == 0 else 6
        rows.append((" ".join(rng.choice(words) for _ in range(size)), label))
    return rows


def _write_csv(path, rows, encoding="utf-8"):
    with open(path, "w", newline="", encoding=encoding) as stream:
        writer = csv.writer(stream)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return str(path)


def trainer_run(run_dir, rows, corpus, max_length, save_steps, learning_rate):
    r"""A config-built BERT with a WordPiece tokenizer trained on ``corpus``,
    fine-tuned on ``rows`` for 6 steps by ``transformers.Trainer``."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from captum_tracin_we._jobs.demo_models import (
        small_bert_classifier,
        train_wordpiece_tokenizer,
    )

    tokenizer = train_wordpiece_tokenizer(corpus, vocab_size=200)
    model = small_bert_classifier(len(tokenizer), 3, seed=0)
    model.config.id2label = dict(enumerate(NAMES))
    model.config.label2id = {name: i for i, name in enumerate(NAMES)}
    encoded = tokenizer([t for t, _ in rows], truncation=True, max_length=max_length)
    features = [
        {"input_ids": ids, "labels": NAMES.index(label)}
        for ids, (_, label) in zip(encoded["input_ids"], rows)
    ]
    Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(run_dir),
            per_device_train_batch_size=8,
            max_steps=6,
            save_steps=save_steps,
            logging_steps=1,
            learning_rate=learning_rate,
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
        ),
        train_dataset=features,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    ).train()
    return str(run_dir)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    train_rows = _texts(30, seed=0, long_every=7)
    corpus = [t for t, _ in train_rows] + [HOSTILE]  # the tokenizer knows < > = '
    run_dir = trainer_run(root / "run", train_rows, corpus, 32, 2, 1e-3)
    train_csv = _write_csv(root / "train.csv", train_rows)
    test_csv = _write_csv(root / "test.csv", _texts(3, seed=1, long_every=2))
    return root, run_dir, train_csv, test_csv


def _explain(run, *extra):
    root, run_dir, train_csv, test_csv = run
    out = str(root / "out")
    main(
        [
            "explain",
            "--model",
            run_dir,
            "--train",
            train_csv,
            "--no-progress",
            "--top-k",
            "3",
            "--out",
            out,
            *extra,
        ]
    )
    with open(os.path.join(out, "scores.json"), encoding="utf-8") as stream:
        summary = json.load(stream)
    with open(os.path.join(out, "report.html"), encoding="utf-8") as stream:
        page = stream.read()
    return summary, page


def test_explain_a_csv_with_text_labels_and_long_texts(run, capsys):
    root, run_dir, train_csv, test_csv = run
    summary, page = _explain(run, "--test", test_csv, "--max-length", "16")
    printed = capsys.readouterr().out
    assert "5 of 30 training texts are longer than 16 tokens" in printed
    assert "report.html" in printed and "scores.json" in printed
    assert printed.count("TEST (label ") == 3 and "TEST [" not in printed
    assert summary["label_names"] == NAMES
    first = summary["tests"][0]
    assert first["truncated"] and first["label_name"] in NAMES
    rows = [entry["row"] for entry in first["TracIn-WE proponents"]]
    assert len(rows) == 3 and all(0 <= row < 30 for row in rows)
    with open(train_csv, encoding="utf-8") as stream:
        labels = [row["label"] for row in csv.DictReader(stream)]
    assert [labels[r] for r in rows] == [
        entry["label_name"] for entry in first["TracIn-WE proponents"]
    ]
    assert "[truncated]" in page and "data:image/png;base64," in page
    assert "How to read this" in page and "sport" in page
    assert "TracInCPFast (last layer)" in page


def test_only_scores_of_the_right_sign_are_listed(run, tmp_path):
    summary, page = _explain(run, "--text", "goal team match", "--top-k", "30")
    entry = summary["tests"][0]
    for method in ("TracIn-WE", "TracInCPFast (last layer)"):
        assert all(e["score"] > 0 for e in entry[f"{method} proponents"])
        assert all(e["score"] < 0 for e in entry[f"{method} opponents"])
        both = len(entry[f"{method} proponents"]) + len(entry[f"{method} opponents"])
        assert both <= 30


def test_explain_reuses_an_index(run, tmp_path, capsys):
    index = str(tmp_path / "index")
    first, _ = _explain(run, "--text", "goal team match", "--index", index)
    assert "Built the index" in capsys.readouterr().out
    started = time.perf_counter()
    second, _ = _explain(run, "--text", "goal team match", "--index", index)
    wall = time.perf_counter() - started
    assert "Using the index" in capsys.readouterr().out
    for summary in (first, second):  # where the time went, phase by phase
        phases = summary["seconds"]
        assert list(phases) == ["load", "index", "query", "report"]
        assert all(value > 0 for value in phases.values())
    assert sum(second["seconds"].values()) <= wall
    # The last layer's training side is kept beside the index and read back;
    # its scores equal Captum's TracInCPFast recomputed without an index.
    side = os.path.join(index, "tracincp_fast.pt")
    written = os.stat(side).st_mtime_ns
    third, _ = _explain(run, "--text", "goal team match", "--index", index)
    assert os.stat(side).st_mtime_ns == written
    captum, _ = _explain(run, "--text", "goal team match")
    assert "kept in the index folder" in str(third["settings"])
    assert "recomputed" in str(captum["settings"]["Last layer"])
    methods = ["TracIn-WE", "TracInCPFast (last layer)"]
    for method in [
        f"{m} {part}" for m in methods for part in ("proponents", "opponents")
    ]:
        for other in (second, third, captum):
            assert [e["row"] for e in first["tests"][0][method]] == [
                e["row"] for e in other["tests"][0][method]
            ]
            assert [e["score"] for e in first["tests"][0][method]] == pytest.approx(
                [e["score"] for e in other["tests"][0][method]], rel=1e-5
            )


def test_explain_with_idf_weighting_and_frequent_tokens_excluded(run, capsys):
    def rows_and_scores(summary):
        entry = summary["tests"][0]["TracIn-WE proponents"]
        return [e["row"] for e in entry], [e["score"] for e in entry]

    text = ("--text", "goal team match the a of")
    plain, _ = _explain(run, *text, "--top-k", "30")
    power_zero, _ = _explain(run, *text, "--top-k", "30", "--idf-power", "0")
    assert rows_and_scores(power_zero)[0] == rows_and_scores(plain)[0]
    assert rows_and_scores(power_zero)[1] == pytest.approx(rows_and_scores(plain)[1])
    weighted, page = _explain(run, *text, "--top-k", "30", "--idf-power", "1")
    assert "idf^1 (TracIn-WE-IDF)" in page
    assert sorted(rows_and_scores(weighted)[1]) != pytest.approx(
        sorted(rows_and_scores(plain)[1])
    )
    _, page = _explain(run, *text, "--exclude-frequent", "3")
    assert "the 3 most frequent tokens" in page
    with pytest.raises(SystemExit):
        _explain(run, *text, "--idf-power", "-1")
    assert "finite number >= 0" in capsys.readouterr().err


def _fails(run, message, *extra, model=None, train=None):
    root, run_dir, train_csv, _ = run
    argv = ["explain", "--model", model or run_dir, "--train", train or train_csv]
    argv += ["--no-progress", "--out", str(root / "failed"), *extra]
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert message in str(stopped.value), str(stopped.value)


def test_explain_errors_name_the_file_and_the_fix(run, tmp_path):
    root, run_dir, train_csv, _ = run
    unknown = _write_csv(tmp_path / "unknown.csv", [("chip data", "weather")])
    unknown_labels = "labels the model does not know: ['weather']"
    _fails(run, unknown_labels, "--text", "x", train=unknown)
    _fails(run, "no column 'topic'", "--label-column", "topic", "--text", "x")
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    _fails(run, "has no rows", "--text", "x", train=str(empty))
    latin = _write_csv(tmp_path / "latin.csv", [("caf\xe9 goal", "sport")], "latin-1")
    _fails(run, "is not valid UTF-8", "--text", "x", train=latin)
    _fails(run, "Give test texts")
    no_tokenizer = tmp_path / "no_tokenizer"
    shutil.copytree(os.path.join(run_dir, "checkpoint-6"), no_tokenizer)
    for name in os.listdir(no_tokenizer):
        if "token" in name or name == "vocab.txt":
            os.remove(no_tokenizer / name)
    _fails(run, "No tokenizer", "--text", "x", model=str(no_tokenizer))
    no_state = tmp_path / "no_state"
    shutil.copytree(run_dir, no_state)
    os.remove(no_state / "checkpoint-2" / "trainer_state.json")
    _fails(run, "no trainer_state.json", "--text", "x", model=str(no_state))
    unlogged = tmp_path / "unlogged"
    shutil.copytree(run_dir, unlogged)
    state_path = unlogged / "checkpoint-6" / "trainer_state.json"
    state = json.loads(state_path.read_text())
    for entry in state["log_history"]:
        if entry.get("step") == 6:
            entry.pop("learning_rate", None)  # logged earlier steps only
    state_path.write_text(json.dumps(state))
    _fails(run, "logs no learning rate at step 6", "--text", "x", model=str(unlogged))
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    config_path = old / "checkpoint-2" / "config.json"
    config = json.loads(config_path.read_text())
    config["transformers_version"] = "4.50.0"
    config_path.write_text(json.dumps(config))
    _fails(run, "transformers 4.50.0", "--text", "x", model=str(old))
    mixed = tmp_path / "mixed"
    shutil.copytree(run_dir, mixed)
    state_path = mixed / "checkpoint-4" / "trainer_state.json"
    state = json.loads(state_path.read_text())
    state["log_history"][0]["loss"] = 123.0  # as if from another run
    state_path.write_text(json.dumps(state))
    _fails(run, "not from the same training run", "--text", "x", model=str(mixed))
    _fails(
        run, "more than the model's 128 positions", "--text", "x", "--max-length", "300"
    )
    with pytest.raises(SystemExit):
        main(["explain", "--model", run_dir, "--train", train_csv, "--top-k", "0"])
    _fails(run, "A --text is empty", "--text", " ")
    misfit = tmp_path / "misfit"
    shutil.copytree(run_dir, misfit)
    from safetensors.torch import load_file, save_file

    weights = load_file(str(misfit / "checkpoint-2" / "model.safetensors"))
    weights["classifier.weight"] = torch.zeros(5, weights["classifier.weight"].shape[1])
    save_file(weights, str(misfit / "checkpoint-2" / "model.safetensors"))
    _fails(run, "does not fit the model", "--text", "x", model=str(misfit))


REQUIRE_BROWSER = os.environ.get("CAPTUM_TRACIN_WE_REQUIRE_BROWSER") == "1"


@pytest.mark.skipif(
    chromium() is None and not REQUIRE_BROWSER, reason="Chromium is not installed"
)
def test_report_reads_well_in_chromium_and_hostile_text_stays_inert(run, tmp_path):
    import re
    import subprocess

    root, run_dir, train_csv, test_csv = run
    hostile_csv = tmp_path / "hostile.csv"
    with open(train_csv, encoding="utf-8") as stream:
        rows = [(row["text"], row["label"]) for row in csv.DictReader(stream)]
    _write_csv(hostile_csv, [(HOSTILE, "sport")] + rows)
    out = tmp_path / "report"
    main(
        ["explain", "--model", run_dir, "--train", str(hostile_csv), "--test", test_csv]
        + ["--text", HOSTILE, "--no-progress", "--top-k", "3", "--out", str(out)]
    )
    page = out / "report.html"
    flags = chromium_flags(str(tmp_path / "profile"))
    dom = subprocess.run(
        flags + ["--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    title = re.search(r"<title>(.*?)</title>", dom).group(1)
    assert "pwned" not in title and "TracIn-WE" in title
    assert "script" in dom and "&lt;" in dom  # the hostile text is shown, as text
    assert not re.search(r"<script", dom) and not re.search(r"<[^>]*onerror", dom)
    assert dom.count('<li><a href="#test-') == 4  # table of contents
    screenshot = os.environ.get("CAPTUM_TRACIN_WE_SCREENSHOT") or str(
        tmp_path / "r.png"
    )
    subprocess.run(
        flags + [f"--screenshot={screenshot}", "--window-size=1366,900", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    from matplotlib.image import imread

    pixels = imread(screenshot)[..., :3]
    assert pixels.std() > 0.01 and (pixels < 0.95).any(axis=-1).mean() > 0.02


def test_explain_adds_a_layer_group_side_by_side(run, capsys):
    summary, page = _explain(
        run, "--text", "goal team match", "--layer-group", "attention late"
    )
    entry = summary["tests"][0]
    name = "TracIn (attention late)"
    assert entry[f"{name} proponents"] or entry[f"{name} opponents"]
    assert all(e["score"] > 0 for e in entry[f"{name} proponents"])
    assert name in page and summary["settings"]["Layer group"] == "attention late"
    assert name in json.dumps(summary["method_diagnostics"])
    _fails(
        run,
        "--layer-group 'attention center' is not a layer group of this model; choose "
        "one of ['attention early', 'attention late', 'classifier']",
        "--text",
        "x",
        "--layer-group",
        "attention center",
    )


def test_explain_normalises_and_shows_repsim_side_by_side(run):
    summary, page = _explain(run, "--text", "goal team match", "--normalize", "cosine",
                             "--repsim")  # fmt: skip
    settings = summary["settings"]
    assert settings["Gradient normalisation"] == "cosine"
    assert settings["RepSim"] == "shown (final model)"
    entry = summary["tests"][0]
    name = "RepSim (last hidden state)"
    scores = [e["score"] for e in entry[f"{name} proponents"]]
    assert scores and all(-1 - 1e-6 <= s <= 1 + 1e-6 for s in scores)
    assert name in page and name in json.dumps(summary["method_diagnostics"])
    plain, _ = _explain(run, "--text", "goal team match")
    normalised = [e["score"] for e in entry["TracIn-WE proponents"]]
    unnormalised = [e["score"] for e in plain["tests"][0]["TracIn-WE proponents"]]
    assert normalised != unnormalised


def test_the_max_length_comes_from_the_runs_record_or_is_said_unknown(
    run, tmp_path, capsys
):
    import shutil

    from captum_tracin_we._files.model_folder import (
        TRAINING_RECORD,
        write_training_record,
    )

    root, run_dir, train_csv, _ = run
    summary, _ = _explain(run, "--text", "goal team match")
    assert "the run does not record the length" in summary["settings"]["Max length"]
    printed = capsys.readouterr().out
    assert "does not record the token limit" in printed
    predicted = summary["label_names"][summary["tests"][0]["predicted"]]
    assert f"TEST (predicted {predicted}) goal team match" in printed
    recorded = str(tmp_path / "run")
    shutil.copytree(run_dir, recorded)
    write_training_record(recorded, 16)
    summary, _ = _explain(
        (root, recorded, train_csv, None), "--text", "goal team match"
    )
    assert summary["settings"]["Max length"] == (
        "16 tokens (the training length the run records)"
    )
    assert "5 of 30 training texts are longer than 16 tokens" in capsys.readouterr().out
    with open(os.path.join(recorded, TRAINING_RECORD), "w") as stream:
        stream.write('{"max_length": "64"}')
    _fails(run, "does not hold a valid training length", "--text", "x", model=recorded)


def test_a_missing_data_file_is_named_before_the_model_loads(run, monkeypatch):
    import captum_tracin_we._jobs.explain_data as explain_job

    def no_model(path):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(explain_job, "load_model_folder", no_model)
    _fails(run, "--train 'nowhere.csv' does not exist", "--text", "x",
           train="nowhere.csv")  # fmt: skip
    _fails(run, "--test 'absent.tsv' does not exist", "--test", "absent.tsv")


def test_help_states_each_default_once_and_none_for_required_options(capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # unwrapped
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "(default: the model's maximum) (default" not in text
    assert "TSV" in text and "(default: 5)" in text and "(default: 32)" in text


def _page_parts(page: str):
    r"""By structure: the contents list's entries, every <bdi> text inside a
    test section heading's block, and the word table's test-row cells."""
    from html.parser import HTMLParser

    class Parts(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack, self.toc, self.cells = [], [], []
            self.test_cell = False

        def handle_starttag(self, tag, attrs):
            self.stack.append((tag, dict(attrs)))

        def handle_endtag(self, tag):
            while self.stack and self.stack.pop()[0] != tag:
                pass

        def handle_data(self, data):
            tags = [t for t, _ in self.stack]
            if "li" in tags and "a" in tags and "bdi" in tags:
                self.toc.append(data)
            if tags and tags[-1] == "td":
                self.cells.append(data)

    parser = Parts()
    parser.feed(page)
    return parser


def test_the_report_reads_right_at_a_glance(run):
    long_text = "goal team match " * 12 + "ending"
    summary, page = _explain(run, "--text", long_text, "--text", "goal team match")
    parts = _page_parts(page)
    first = parts.toc[0]
    assert first.endswith(" …") and len(first) <= 80
    assert long_text.startswith(first[:-2])  # cut between words, not inside one
    seen = summary["tests"][0]["text"]
    assert page.count(seen) == 1  # the section shows the text once, not twice
    assert any(c.startswith("sum of the rows below: ") for c in parts.cells)
    assert "Excluded tokens" in page and "none: every token counts" in page
    assert "(special: False" not in page


def test_progress_output_suits_a_log(run, capsys):
    root, run_dir, train_csv, _ = run
    _explain(run, "--text", "goal team match")  # --no-progress
    assert "Loading weights" not in capsys.readouterr().err
    out = str(root / "with_bars")
    index = str(root / "bars_index")
    main(["explain", "--model", run_dir, "--train", train_csv, "--text", "goal",
          "--top-k", "2", "--out", out, "--index", index])  # fmt: skip
    captured = capsys.readouterr()
    assert "\x1b[A" not in captured.err  # no nested bars' cursor codes in a log
    assert "Building the TracIn-WE index" in captured.err
    assert "(rank 0" not in captured.err  # one process: no rank
    # With --index the last layer's training side is computed once, with a bar.
    assert "TracInCPFast (classifier): training side" in captured.err


@pytest.fixture()
def private_tmp(tmp_path, monkeypatch):
    r"""Warm processes' sockets in this test's own temporary folder."""
    import pathlib
    import tempfile

    # Short: a Unix socket's path has at most 107 bytes.
    folder = pathlib.Path(tempfile.mkdtemp(prefix="w", dir="/tmp"))
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", None)
    yield folder
    for name in os.listdir(folder / f"captum-tracin-we-{os.getuid()}"):
        if name.endswith(".log"):  # a failure in a warm process shows here
            print((folder / f"captum-tracin-we-{os.getuid()}" / name).read_text())
    shutil.rmtree(folder, ignore_errors=True)


def _wait_for(condition, seconds=120.0):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def _sockets(folder):
    private = folder / f"captum-tracin-we-{os.getuid()}"
    return (
        [n for n in os.listdir(private) if n.endswith(".sock")]
        if private.exists()
        else []
    )


def test_keep_warm_answers_as_the_command_does(run, tmp_path, private_tmp, capsys):
    root, run_dir, train_csv, _ = run
    index = str(tmp_path / "index")

    def explain(text, out, *extra):
        main(["explain", "--model", run_dir, "--train", train_csv, "--text", text,
              "--index", index, "--top-k", "3", "--no-progress", "--out",
              str(tmp_path / out), "--keep-warm", "0.1", *extra])  # fmt: skip
        with open(tmp_path / out / "scores.json", encoding="utf-8") as stream:
            return json.load(stream), capsys.readouterr().out

    cold, printed = explain("goal team match", "cold")
    assert "Using the index" not in printed and "A warm process keeps" in printed
    _wait_for(lambda: _sockets(private_tmp))
    warm, printed = explain("goal team match", "warm")
    assert "Built the index" not in printed and "Using the index" not in printed
    assert "A warm process keeps" not in printed  # answered by it
    assert warm["seconds"]["load"] < 1 and warm["seconds"]["index"] == 0
    for method in ("TracIn-WE", "TracInCPFast (last layer)"):
        for part in ("proponents", "opponents"):
            key = f"{method} {part}"
            assert [e["row"] for e in warm["tests"][0][key]] == [
                e["row"] for e in cold["tests"][0][key]
            ]
            assert [e["score"] for e in warm["tests"][0][key]] == pytest.approx(
                [e["score"] for e in cold["tests"][0][key]], rel=1e-6
            )
    # A bad question is refused by the warm process as by the command.
    with pytest.raises(SystemExit) as stop:
        explain("goal", "bad", "--test", str(tmp_path / "missing.csv"))
    assert stop.value.code == 2 and "missing.csv" in str(stop.value)
    # A changed training file: the warm process stops, the command answers.
    os.utime(train_csv, ns=(time.time_ns(), time.time_ns()))
    _, printed = explain("goal team match", "after_change")
    assert "Using the index" in printed and "A warm process keeps" in printed
    # Idle for --keep-warm minutes (6 s here): it stops and removes its socket.
    _wait_for(lambda: _sockets(private_tmp))
    (name,) = _sockets(private_tmp)
    _wait_for(lambda: not _sockets(private_tmp), seconds=60)
    # A socket left by a killed process: the command answers, a new one starts.
    import socket

    left = private_tmp / f"captum-tracin-we-{os.getuid()}" / name
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(left))
    _, printed = explain("goal team match", "after_kill")
    assert "A warm process keeps" in printed
    _wait_for(lambda: _listening(left))
    warm, printed = explain("goal team match", "warm_again")
    assert "A warm process keeps" not in printed
    _wait_for(lambda: not _sockets(private_tmp), seconds=60)


def _listening(path):
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


def test_a_socket_path_too_long_is_said_before_starting(tmp_path, monkeypatch):
    import tempfile

    from captum_tracin_we._jobs.warm_client import socket_path

    monkeypatch.setenv("TMPDIR", str(tmp_path / ("x" * 90)))
    monkeypatch.setattr(tempfile, "tempdir", None)
    (tmp_path / ("x" * 90)).mkdir()
    with pytest.raises(OSError, match="TMPDIR to a shorter folder"):
        socket_path("0" * 20)


def test_the_warm_folder_must_be_private(private_tmp):
    from captum_tracin_we._jobs.warm_client import private_folder

    folder = private_folder()
    assert os.stat(folder).st_mode & 0o777 == 0o700
    os.chmod(folder, 0o755)
    with pytest.raises(PermissionError, match="not a private folder"):
        private_folder()
    os.chmod(folder, 0o700)


def test_a_file_rewritten_with_its_old_times_is_still_seen_changed(tmp_path):
    from captum_tracin_we._jobs.warm_worker import file_signature

    path = tmp_path / "train.csv"
    path.write_text("text,label\na,b\n")
    before = file_signature([str(tmp_path)])
    status = os.stat(path)
    time.sleep(0.01)
    path.write_text("text,label\na,c\n")  # same size
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert os.stat(path).st_mtime_ns == status.st_mtime_ns
    assert file_signature([str(tmp_path)]) != before
