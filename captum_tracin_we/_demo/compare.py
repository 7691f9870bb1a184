#!/usr/bin/env python3

r"""The last-layer comparison, kept importable here for the benchmarks."""

from captum_tracin_we._app.last_layer import (  # noqa: F401  (re-exported)
    LogitsOnly,
    last_layer_influence,
    last_linear_name,
    load_into_wrapper,
    tracincp_fast,
    tuple_loader,
)
