#!/usr/bin/env python3

import os

from tests.public_api import PUBLIC_MODULES, public_api

# The public API as it stood before the redesign by concept (issue 22, at commit
# 998922b), printed by tests/public_api.py; visualization and datasets had no
# __all__ then, so their own definitions were listed.
BEFORE = os.path.join(os.path.dirname(__file__), "public_api_before_redesign.txt")


def test_every_public_name_keeps_its_signature():
    with open(BEFORE, encoding="utf-8") as stream:
        before = [line for line in stream.read().splitlines() if line]
    now = set(public_api())
    missing = [line for line in before if line not in now]
    assert not missing, "Public names lost or changed:\n" + "\n".join(missing)


def test_public_modules_only_re_export():
    import ast
    import importlib

    for name in PUBLIC_MODULES + ["captum_tracin_we.demo"]:
        path = importlib.import_module(name).__file__
        with open(path, encoding="utf-8") as stream:
            tree = ast.parse(stream.read())
        defined = [
            node.name
            for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef))
            and node.name != "__getattr__"  # the demo's lazy re-export
        ]
        assert not defined, f"{path} defines {defined}; move them to a private module"
