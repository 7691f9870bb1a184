#!/usr/bin/env python3

r"""
How fast ``captum-tracin-we explain`` answers a new ``--text`` once its index
exists, on the real pretrained MiniLM.

Setup: the demo's pipeline fine-tunes all-MiniLM-L6-v2 with transformers'
Trainer on 2,000 Rotten Tomatoes sentences (1 epoch, 3 checkpoints; cached in
benchmarks/_out/explain), then ``explain --index`` builds the index once.
Measured: ``--repeats`` re-runs, each a new ``python -m captum_tracin_we
explain`` process with a new ``--text``, ``--top-k 5``, ``--no-last-layer``
(the last-layer comparison recomputes the whole training side and is not
served from the index): the wall time of the command (Python's start and the
imports of torch and transformers included), and the phases the command
itself reports in ``scores.json`` under ``"seconds"``: "load" (model,
tokenizer, data, tokenization, predictions), "index" (TracInWE and the index,
verified: checksums and the training data), "query" (influence and word
influence) and "report" (figures and report.html).

Run:  python -m benchmarks.bench_explain [--repeats 5]
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks._common import conditions

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_out", "explain")
TEXTS = [
    "a gripping, funny and humane film",
    "the plot is a mess and the acting is worse",
    "an ambitious failure that is still worth seeing",
    "slow , dull and far too long",
    "one of the year's most delightful surprises",
    "it never finds its footing",
    "a warm , generous portrait of a family",
    "the jokes fall flat",
]


def prepare(train_size: int) -> str:
    r"""Fine-tunes MiniLM as the demo does (cached) and returns the output folder."""
    from captum_tracin_we.demo import DemoSettings, demo_rows, fine_tune_run

    settings = DemoSettings(train_size=train_size, test_size=4, out=OUT)
    run_dir = os.path.join(OUT, "run")
    if not any(name.startswith("checkpoint-") for name in _listdir(run_dir)):
        os.makedirs(OUT, exist_ok=True)
        train, _, names = demo_rows(settings)
        with open(os.path.join(OUT, "train.csv"), "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["text", "label"])
            writer.writerows([text, names[label]] for text, label, _ in train)
        start = time.perf_counter()
        fine_tune_run(settings, train, names, run_dir)
        print(f"Fine-tuned in {time.perf_counter() - start:.0f} s")
    return run_dir


def _listdir(path: str):
    return os.listdir(path) if os.path.isdir(path) else []


def explain(run_dir: str, text: str, index: str) -> dict:
    r"""Runs the command once; returns its wall time and its reported phases."""
    out = os.path.join(OUT, "report")
    command = [
        sys.executable, "-m", "captum_tracin_we", "explain", "--model", run_dir,
        "--train", os.path.join(OUT, "train.csv"), "--text", text, "--top-k", "5",
        "--index", index, "--no-last-layer", "--no-progress", "--out", out,
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - start
    with open(os.path.join(out, "scores.json"), encoding="utf-8") as stream:
        phases = json.load(stream)["seconds"]
    return {**phases, "command": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    run_dir = prepare(args.train)
    index = os.path.join(OUT, "index")
    first = explain(run_dir, "a first question builds the index", index)
    print(f"First run (builds the index if missing): {first['command']:.1f} s")
    with open(os.path.join(OUT, "train.csv"), encoding="utf-8") as stream:
        count = sum(1 for _ in csv.DictReader(stream))
    runs = [explain(run_dir, TEXTS[i % len(TEXTS)], index) for i in range(args.repeats)]
    print(f"Conditions: {conditions()}")
    print(
        f"MiniLM, {count} training texts, 3 checkpoints, one new --text per run, "
        f"--top-k 5, --no-last-layer, index attached with verify=True; "
        f"median of {args.repeats}"
    )
    for phase in ("load", "index", "query", "report", "command"):
        values = [run[phase] for run in runs]
        print(f"  {phase:8s}: {statistics.median(values):.2f} s "
              f"(min {min(values):.2f}, max {max(values):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
