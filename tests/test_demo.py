#!/usr/bin/env python3

import json
import subprocess
import sys

from captum_tracin_we._cli import main


def test_quick_demo_writes_report_figures_and_scores(capsys, tmp_path):
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
    assert out.count("TEST [") == 2
    assert out.count("words: ") == 8  # 2 proponents and 2 opponents each
    assert out.count("top proponents, then top opponents:") == 2
    assert "from captum_tracin_we import TracInWE" in out
    assert len(list((tmp_path / "checkpoints").iterdir())) == 3
    report = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "TracInCPFast (last layer)" in report and report.count("<h2>") == 1
    assert report.count("<mark") > 10
    for figure in ("word_contributions.png", "method_comparison.png"):
        assert (tmp_path / figure).stat().st_size > 10_000
    scores = json.loads((tmp_path / "scores.json").read_text(encoding="utf-8"))
    first = scores["tests"][0]
    assert len(scores["tests"]) == 2 and len(first["tracin_we_proponents"]) == 2
    assert (
        first["tracin_we_proponents"][0]["score"]
        >= first["tracin_we_proponents"][1]["score"]
    )
    assert first["tracincp_fast_opponents"][0]["score"] < 0


def test_demo_reads_a_csv(tmp_path):
    rows = ["text,label"] + [f"word{i % 7} filler {i},{i % 3}" for i in range(60)]
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
    assert len(scores["tests"]) == 2


def test_module_entry_point_shows_help():
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
