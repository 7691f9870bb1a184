#!/usr/bin/env python3

import csv
import json
import subprocess
import sys

from captum_tracin_we._cli import main


def test_quick_demo_fine_tunes_with_trainer_then_explains(capsys, tmp_path):
    main(
        [
            "demo",
            "--quick",
            "--train-size",
            "200",
            "--test-size",
            "2",
            "--epochs",
            "1",
            "--k",
            "2",
            "--no-progress",
            "--out",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert out.count("TEST (label ") == 2  # the demo's test texts have labels
    assert out.count("words: ") == 8  # 2 proponents and 2 opponents each
    assert "captum-tracin-we explain --model RUN_DIR" in out
    for name in ("report.html", "scores.json", "train.csv", "test.csv", "run"):
        assert str(tmp_path / name) in out  # every file written is listed
    checkpoints = [p for p in (tmp_path / "run").iterdir() if p.is_dir()]
    assert len(checkpoints) == 3  # checkpoint-<step> folders, 3 per run
    from captum_tracin_we._files.model_folder import training_length

    assert training_length(str(tmp_path / "run")) == 64  # explain reads it back
    report = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "TracInCPFast (last layer)" in report and "How to read this" in report
    # scores + cancellation figure + 2 pairs
    assert report.count("data:image/png;base64,") == 4
    assert "Methods side by side" in report and "Distinct proponents" in report
    assert "<table class='tw-table tw-comparison'>" in report  # a table, not <pre>
    assert "negative" in report and "positive" in report
    scores = json.loads((tmp_path / "scores.json").read_text(encoding="utf-8"))
    first = scores["tests"][0]
    assert scores["label_names"] == ["negative", "positive"]
    proponents = first["TracIn-WE proponents"]
    assert len(scores["tests"]) == 2 and len(proponents) == 2
    assert proponents[0]["score"] >= proponents[1]["score"]
    assert first["TracInCPFast (last layer) opponents"][0]["score"] < 0
    diagnostics = scores["method_diagnostics"]["methods"]
    assert [row["method"] for row in diagnostics] == [
        "TracIn-WE",
        "TracInCPFast (last layer)",
    ]
    assert all(row["proponent_cardinality"] >= 1 for row in diagnostics)
    with open(tmp_path / "train.csv", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert rows[proponents[0]["row"]]["label"] == proponents[0]["label_name"]


def test_demo_reads_a_csv_with_text_labels(tmp_path):
    topics = ["business", "sport", "tech"]
    rows = ["text,label"] + [
        f"word{i % 7} filler {i},{topics[i % 3]}" for i in range(60)
    ]
    (tmp_path / "data.csv").write_text("\n".join(rows), encoding="utf-8")
    main(
        [
            "demo",
            "--quick",
            "--data",
            str(tmp_path / "data.csv"),
            "--train-size",
            "40",
            "--test-size",
            "2",
            "--epochs",
            "1",
            "--no-progress",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    scores = json.loads((tmp_path / "o" / "scores.json").read_text(encoding="utf-8"))
    assert len(scores["tests"]) == 2 and scores["label_names"] == topics


def test_module_entry_point_shows_help_with_defaults():
    result = subprocess.run(
        [sys.executable, "-m", "captum_tracin_we", "demo", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for option in (
        "--model",
        "--data",
        "--train-size",
        "--epochs",
        "--top-k-words",
        "--quick",
        "--out",
    ):
        assert option in result.stdout
    assert "(default: 1000)" in result.stdout


def test_an_output_folder_inside_a_git_tree_is_pointed_out(tmp_path):
    from captum_tracin_we._jobs.demo_run import working_tree_note

    (tmp_path / "repo" / ".git").mkdir(parents=True)
    inside = tmp_path / "repo" / "tracin_we_demo"
    note = working_tree_note(str(inside))
    assert str(inside) in note and str(tmp_path / "repo") in note
    assert ".gitignore" in note and "--out" in note
    assert working_tree_note(str(tmp_path / "elsewhere" / "demo")) == ""
