#!/usr/bin/env python3

import subprocess
import sys

from captum_tracin_we._cli import main


def test_demo_runs_offline_and_lists_proponents_and_opponents(capsys, tmp_path):
    main(
        [
            "demo",
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
    assert out.count("TEST [") == 4  # proponents and opponents of 2 sentences
    assert out.count("words: ") == 8
    assert out.count("top proponents:") == 2 and out.count("top opponents:") == 2
    assert "from captum_tracin_we import TracInWE" in out
    assert len(list((tmp_path / "checkpoints").iterdir())) == 1
    report = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert report.count("<h2>") == 2 and "<mark" in report
    import json

    scores = json.loads((tmp_path / "scores.json").read_text(encoding="utf-8"))
    assert len(scores) == 2 and len(scores[0]["proponents"]) == 2


def test_module_entry_point_shows_help():
    result = subprocess.run(
        [sys.executable, "-m", "captum_tracin_we", "demo", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--top-k-words" in result.stdout
