#!/usr/bin/env python3

r"""
Outputs written whole and never through a link, output folders checked
before any work, one clear line for every expected failure, a demo folder
that never mixes two runs, and a terminal table whose sides follow the sign
of the score (issue 21, items 5, 6, 7 and 9).
"""

import builtins
import errno
import json
import os
import re

import pytest

pytest.importorskip("datasets")
pytest.importorskip("accelerate")

from captum_tracin_we._cli import main  # noqa: E402
from tests.test_explain import _texts, _write_csv, trainer_run  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    rows = _texts(30, seed=0)
    run_dir = trainer_run(root / "run", rows, [t for t, _ in rows], 16, 3, 1e-3)
    return run_dir, _write_csv(root / "train.csv", rows)


def _argv(run, out, *extra):
    run_dir, train_csv = run
    return ["explain", "--model", run_dir, "--train", train_csv, "--no-progress"] + [
        "--top-k",
        "3",
        "--out",
        str(out),
        "--text",
        "goal team match",
        *extra,
    ]


def _stopped(argv):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    line = str(stopped.value)
    assert "\n" not in line and "Traceback" not in line
    return line


@pytest.fixture
def no_model_load(monkeypatch):
    r"""Fails the test if the job gets as far as loading the model."""

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before the paths were checked")

    monkeypatch.setattr("captum_tracin_we._jobs.explain.load_training", loaded)


def test_out_that_is_a_file_is_refused_before_the_model_loads(
    run, tmp_path, no_model_load
):
    out = tmp_path / "out"
    out.write_text("not a folder")
    line = _stopped(_argv(run, out))
    assert f"--out {str(out)!r} exists and is not a folder" in line
    assert "Give a folder path" in line
    below = tmp_path / "out" / "deeper"
    line = _stopped(_argv(run, below))
    assert "cannot be created" in line and "is a file, not a folder" in line


def test_index_that_is_a_file_is_refused_before_the_model_loads(
    run, tmp_path, no_model_load
):
    index = tmp_path / "index"
    index.write_text("not a folder")
    line = _stopped(_argv(run, tmp_path / "out", "--index", str(index)))
    assert f"--index {str(index)!r} exists and is not a folder" in line


def test_out_that_is_not_writable_is_refused_before_the_model_loads(
    run, tmp_path, no_model_load, monkeypatch
):
    locked = tmp_path / "locked"
    locked.mkdir()
    argv = _argv(run, locked / "out")
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # root writes anyway
    line = _stopped(argv)
    assert f"{str(locked)!r} does not allow creating files" in line
    assert "Give another --out" in line


def test_a_planted_link_is_refused_and_its_target_untouched(
    run, tmp_path, no_model_load
):
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    os.symlink(target, out / "report.html")
    line = _stopped(_argv(run, out))
    assert "is a symbolic link" in line and "never writes an output through" in line
    assert target.read_text() == "keep me"


class _FullDisk:
    r"""A file opened for writing in ``folder`` that takes half of the first
    write and then fails as a full disk does."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, data):
        self._stream.write(data[: len(data) // 2])
        self._stream.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stream.close()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def test_a_full_disk_leaves_the_earlier_outputs_whole(run, tmp_path, monkeypatch):
    out = tmp_path / "out"
    main(_argv(run, out))
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    real_open = builtins.open

    def full_disk_open(path, mode="r", *args, **kwargs):
        stream = real_open(path, mode, *args, **kwargs)
        writing = any(flag in mode for flag in "wxa")
        inside = os.path.dirname(os.path.abspath(str(path))) == str(out)
        return _FullDisk(stream) if writing and inside else stream

    monkeypatch.setattr(builtins, "open", full_disk_open)
    line = _stopped(_argv(run, out, "--top-k", "2"))
    monkeypatch.setattr(builtins, "open", real_open)
    assert "No space left" in line or "free some space" in line.lower()
    assert "report.html" in line or "scores.json" in line
    after = {name: (out / name).read_bytes() for name in os.listdir(out)}
    assert after == before  # no truncated file, no temporary file left behind


def test_a_second_run_says_it_replaced_the_earlier_outputs(run, tmp_path, capsys):
    out = tmp_path / "out"
    main(_argv(run, out))
    assert "Replaced the earlier" not in capsys.readouterr().out
    main(_argv(run, out))
    printed = capsys.readouterr().out
    assert f"Replaced the earlier report.html and scores.json in {out}" in printed
    assert sorted(os.listdir(out)) == ["report.html", "scores.json"]


ROW = re.compile(r"^ {4}\s*([+-]\S+)\s+#(\d+)")


def _printed_sides(printed):
    r"""Rows (score, row) listed under each side of the first test text."""
    sides = {"proponents": [], "opponents": []}
    side = None
    for line in printed.splitlines():
        if line.startswith("TEST") and side is not None:
            break
        heading = re.match(r"^  top (proponents|opponents)", line)
        if heading:
            side = heading.group(1)
        match = ROW.match(line)
        if match and side:
            sides[side].append((float(match.group(1)), int(match.group(2))))
    return sides


@pytest.mark.parametrize(
    "extra, all_scored",
    [([], True), (["--exclude-special-tokens"], False)],  # [CLS] counted or not
)
def test_the_terminal_table_lists_each_side_by_the_sign_of_its_score(
    run, tmp_path, capsys, extra, all_scored
):
    run_dir, train_csv = run
    out = tmp_path / "out"
    argv = ["explain", "--model", run_dir, "--train", train_csv, "--no-progress"]
    argv += ["--top-k", "30", "--out", str(out), "--text", "phone computer"]
    main(argv + extra)  # k = all 30; with no [CLS], 20 share no word and score 0
    sides = _printed_sides(capsys.readouterr().out)
    summary = json.loads((out / "scores.json").read_text(encoding="utf-8"))
    entry = summary["tests"][0]
    for side, sign in (("proponents", 1), ("opponents", -1)):
        listed = entry[f"TracIn-WE {side}"]
        assert [row for _, row in sides[side]] == [e["row"] for e in listed]
        assert all(score * sign > 0 for score, _ in sides[side]), sides[side]
    printed = len(sides["proponents"]) + len(sides["opponents"])
    assert printed == 30 if all_scored else printed < 30  # a score of 0 is neither


def _demo(out, *extra):
    main(
        [
            "demo",
            "--quick",
            "--train-size",
            "40",
            "--test-size",
            "1",
            "--epochs",
            "1",
            "--k",
            "2",
            "--no-progress",
            "--out",
            str(out),
            *extra,
        ]
    )


def test_a_demo_of_another_setup_is_refused_before_training(
    tmp_path, capsys, monkeypatch
):
    out = tmp_path / "demo"
    _demo(out)
    record = json.loads((out / "demo.json").read_text(encoding="utf-8"))
    assert record["finished"] is True and record["setup"]["seed"] == 0
    checkpoints = sorted(os.listdir(out / "run"))
    capsys.readouterr()

    def trained(*args, **kwargs):
        raise AssertionError("fine-tuned into a folder that holds another run")

    monkeypatch.setattr("captum_tracin_we._jobs.demo_run.fine_tune_run", trained)
    with pytest.raises(SystemExit) as stopped:
        _demo(out, "--seed", "1")
    line = str(stopped.value)
    assert "holds a demo run of another setup (seed 0 there, 1 here)" in line
    assert "pass --overwrite" in line and "Give another --out" in line
    assert sorted(os.listdir(out / "run")) == checkpoints
    _demo(out)  # the same setup: reused, not trained again
    assert "Reusing the fine-tuned run" in capsys.readouterr().out


def test_a_run_folder_no_demo_wrote_is_refused(tmp_path, monkeypatch):
    out = tmp_path / "demo"
    (out / "run" / "checkpoint-1").mkdir(parents=True)
    with pytest.raises(SystemExit) as stopped:
        _demo(out)
    assert "holds a run/ folder that no valid demo.json describes" in str(stopped.value)
    assert os.listdir(out / "run") == ["checkpoint-1"]


def test_overwrite_deletes_the_earlier_run_first(tmp_path, capsys):
    out = tmp_path / "demo"
    (out / "run" / "checkpoint-999").mkdir(parents=True)
    _demo(out, "--overwrite")
    assert "Deleted the earlier run" in capsys.readouterr().out
    assert "checkpoint-999" not in os.listdir(out / "run")
    record = json.loads((out / "demo.json").read_text(encoding="utf-8"))
    assert record["finished"] is True
