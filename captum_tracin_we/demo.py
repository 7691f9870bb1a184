#!/usr/bin/env python3

r"""
The demo, from Python: the data it uses (Rotten Tomatoes, packaged), the small
models it can build from a config, and its fine-tuning with the Trainer, so
that a benchmark or a notebook can make the same run as
``captum-tracin-we demo`` (see :func:`run_demo`).
"""

from typing import TYPE_CHECKING, Any

from captum_tracin_we._jobs.demo_data import SENTIMENT, load_csv, load_rotten_tomatoes
from captum_tracin_we._jobs.demo_training import accuracy, encode, fine_tune, loader

# The models (transformers' BERT) and the whole demo job (it explains, so it
# imports the report and the views) are imported on first use, so that the
# data and training helpers stay light.
_LAZY = {
    "DemoSettings": "demo_run",
    "demo_rows": "demo_run",
    "fine_tune_run": "demo_run",
    "run_demo": "demo_run",
    "small_bert_classifier": "demo_models",
    "train_wordpiece_tokenizer": "demo_models",
}
if TYPE_CHECKING:
    from captum_tracin_we._jobs.demo_models import (
        small_bert_classifier,
        train_wordpiece_tokenizer,
    )
    from captum_tracin_we._jobs.demo_run import (
        DemoSettings,
        demo_rows,
        fine_tune_run,
        run_demo,
    )


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"captum_tracin_we._jobs.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SENTIMENT",
    "DemoSettings",
    "accuracy",
    "demo_rows",
    "encode",
    "fine_tune",
    "fine_tune_run",
    "load_csv",
    "load_rotten_tomatoes",
    "loader",
    "run_demo",
    "small_bert_classifier",
    "train_wordpiece_tokenizer",
]
