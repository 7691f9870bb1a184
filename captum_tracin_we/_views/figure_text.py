#!/usr/bin/env python3

r"""The one text setting of every figure: strings drawn as they are."""

from typing import Any, Dict

# Text properties that show a matplotlib string as is: no mathtext, no TeX, so
# a training text with ``$`` or ``\\`` is drawn literally.
LITERAL_TEXT: Dict[str, Any] = {"parse_math": False, "usetex": False}
