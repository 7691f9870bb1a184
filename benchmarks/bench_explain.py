#!/usr/bin/env python3

r"""
How fast ``captum-tracin-we explain`` answers a new ``--text`` once its index
exists, on the real pretrained MiniLM.

Setup: the demo's pipeline fine-tunes all-MiniLM-L6-v2 with transformers'
Trainer on 2,000 Rotten Tomatoes sentences (1 epoch, 3 checkpoints; cached in
benchmarks/_out/explain), then ``explain --index`` builds the index once.
Measured: ``--repeats`` re-runs, each with a new ``--text``, ``--top-k 5``,
``--no-last-layer`` (the last-layer comparison recomputes the whole training
side and is not served from the index). Each re-run is timed twice:

- in process: ``run_explain`` from start to the written report ("total":
  also loading the model, tokenizer and data and tokenizing them), with three
  of its phases: "attach" (TracInWE and the index, verified: checksums and the
  training data), "query" (prediction, influence and word influence), and
  "report" (figures, report.html, scores.json);
- as a command: a new ``python -m captum_tracin_we explain`` process,
  including Python's start and the imports of torch and transformers.

Run:  python -m benchmarks.bench_explain [--repeats 5]
"""

import argparse
import csv
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
    from captum_tracin_we.demo import (
        DemoSettings,
        _write_csv,
        demo_rows,
        fine_tune_run,
    )

    settings = DemoSettings(train_size=train_size, test_size=4, out=OUT)
    run_dir = os.path.join(OUT, "run")
    if not any(name.startswith("checkpoint-") for name in _listdir(run_dir)):
        os.makedirs(OUT, exist_ok=True)
        train, _, names = demo_rows(settings)
        _write_csv(os.path.join(OUT, "train.csv"), train, names)
        start = time.perf_counter()
        fine_tune_run(settings, train, names, run_dir)
        print(f"Fine-tuned in {time.perf_counter() - start:.0f} s")
    return run_dir


def _listdir(path: str):
    return os.listdir(path) if os.path.isdir(path) else []


def in_process(run_dir: str, text: str, index: str):
    from captum_tracin_we._jobs import explain as job

    phases = {}
    original = {name: getattr(job, name) for name in ("_tracin", "write_report")}

    def timed_tracin(*args, **kwargs):
        start = time.perf_counter()
        result = original["_tracin"](*args, **kwargs)
        phases["attach"] = time.perf_counter() - start
        phases["query_start"] = time.perf_counter()
        return result

    def timed_report(*args, **kwargs):
        phases["query"] = time.perf_counter() - phases.pop("query_start")
        start = time.perf_counter()
        result = original["write_report"](*args, **kwargs)
        phases["report"] = time.perf_counter() - start
        return result

    job._tracin, job.write_report = timed_tracin, timed_report
    try:
        start = time.perf_counter()
        job.run_explain(
            job.ExplainSettings(
                model=run_dir,
                train=os.path.join(OUT, "train.csv"),
                texts=[text],
                top_k=5,
                index=index,
                out=os.path.join(OUT, "report"),
                last_layer=False,
                show_progress=False,
            )
        )
        phases["total"] = time.perf_counter() - start
    finally:
        job._tracin, job.write_report = original["_tracin"], original["write_report"]
    return phases


def as_command(run_dir: str, text: str, index: str) -> float:
    command = [
        sys.executable, "-m", "captum_tracin_we", "explain", "--model", run_dir,
        "--train", os.path.join(OUT, "train.csv"), "--text", text, "--top-k", "5",
        "--index", index, "--no-last-layer", "--no-progress",
        "--out", os.path.join(OUT, "report_cli"),
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    run_dir = prepare(args.train)
    index = os.path.join(OUT, "index")
    start = time.perf_counter()
    in_process(run_dir, "a first question builds the index", index)
    print(
        f"First run (builds the index if missing): {time.perf_counter() - start:.1f} s"
    )
    with open(os.path.join(OUT, "train.csv"), encoding="utf-8") as stream:
        count = sum(1 for _ in csv.DictReader(stream))
    runs = [
        in_process(run_dir, TEXTS[i % len(TEXTS)], index) for i in range(args.repeats)
    ]
    commands = [as_command(run_dir, TEXTS[-1 - i], index) for i in range(args.repeats)]
    print(f"Conditions: {conditions()}")
    print(
        f"MiniLM, {count} training texts, 3 checkpoints, one new --text per run, "
        f"--top-k 5, --no-last-layer, index attached with verify=True; "
        f"median of {args.repeats}"
    )
    for phase in ("attach", "query", "report", "total"):
        values = [run[phase] for run in runs]
        print(f"  in process, {phase:7s}: {statistics.median(values):.2f} s "
              f"(min {min(values):.2f}, max {max(values):.2f})")  # fmt: skip
    print(
        f"  as a command (new process, imports included): "
        f"{statistics.median(commands):.2f} s (min {min(commands):.2f}, "
        f"max {max(commands):.2f})"
    )


if __name__ == "__main__":
    main()
