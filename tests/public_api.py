#!/usr/bin/env python3

r"""
The public API as text, one line per public name (and per public method of a
public class) with its signature; annotations name classes without their
module, so that moving a private module does not change the text. Run as a
script to print it (``python -m tests.public_api``).
"""

import importlib
import inspect
import re
from typing import Any, List

PUBLIC_MODULES = [
    "captum_tracin_we",
    "captum_tracin_we.visualization",
    "captum_tracin_we.explorer",
    "captum_tracin_we.hf",
    "captum_tracin_we.evaluation",
    "captum_tracin_we.datasets",
    "captum_tracin_we.kernels",
]


def signature_text(obj: Any) -> str:
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(?)"
    text = re.sub(r" at 0x[0-9a-f]+", "", text)
    return re.sub(r"captum_tracin_we(?:\.\w+)*\.(?=[A-Z])", "", text)


def public_api() -> List[str]:
    lines = []
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for attr in sorted(module.__all__):
            obj = getattr(module, attr)
            lines.append(f"{name}.{attr}{signature_text(obj) if callable(obj) else ''}")
            if inspect.isclass(obj):
                for method, value in sorted(vars(obj).items()):
                    if not method.startswith("_") and callable(value):
                        method_obj = getattr(obj, method)
                        lines.append(
                            f"{name}.{attr}.{method}{signature_text(method_obj)}"
                        )
    return lines


if __name__ == "__main__":
    print("\n".join(public_api()))
