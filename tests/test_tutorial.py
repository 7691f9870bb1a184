#!/usr/bin/env python3

r"""The tutorial notebook runs headlessly from top to bottom (at a small size)."""

import os

import nbformat
from nbclient import NotebookClient

TUTORIAL = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "tutorials",
    "TracInWE_Tutorial.ipynb",
)


def test_tutorial_executes(monkeypatch, tmp_path):
    monkeypatch.setenv("CAPTUM_TRACIN_WE_TUTORIAL_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(TUTORIAL, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    outputs = "".join(
        str(output.get("text", "")) + str(output.get("data", {}).get("text/html", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )
    assert "sides sum to the score: True" in outputs
    assert "TracInCPFast (last layer)" in outputs
    assert "distinct training examples" in outputs
