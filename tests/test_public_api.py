#!/usr/bin/env python3

import os
from typing import Dict, List, Tuple

from tests.public_api import PUBLIC_MODULES, public_api

# The public API as it stood before the redesign by concept (issue 22, at commit
# 998922b), printed by tests/public_api.py; visualization and datasets had no
# __all__ then, so their own definitions were listed.
BEFORE = os.path.join(os.path.dirname(__file__), "public_api_before_redesign.txt")


def split_line(line: str) -> Tuple[str, List[str], str]:
    r"""Name, top-level parameter texts and return text of one API line."""
    if "(" not in line:
        return line, [], ""
    name, rest = line.split("(", 1)
    depth, quote, current, parameters = 0, "", "", []
    for index, char in enumerate(rest):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}" and depth:
            depth -= 1
        elif char == ")":
            parameters.append(current.strip())
            return name, [p for p in parameters if p], rest[index + 1 :].strip()
        elif char == "," and not depth:
            parameters.append(current.strip())
            current = ""
            continue
        current += char
    raise ValueError(f"unbalanced signature: {line}")


def sorted_unions(text: str) -> str:
    r"""
    ``text`` with the members of every ``Union[...]`` sorted: typing caches a
    Union by its set of members, so ``Union[A, B, None]`` prints as
    ``Union[B, A, NoneType]`` when an equal Union was made first elsewhere
    (the order depends on what was imported before).
    """
    start = text.find("Union[")
    if start < 0:
        return text
    depth, members, current = 0, [], ""
    for index in range(start + len("Union["), len(text)):
        char = text[index]
        if char == "[":
            depth += 1
        elif char == "]" and not depth:
            members.append(current.strip())
            inner = ", ".join(sorted(sorted_unions(m) for m in members))
            rest = sorted_unions(text[index + 1 :])
            return f"{text[:start]}Union[{inner}]{rest}"
        elif char == "]":
            depth -= 1
        elif char == "," and not depth:
            members.append(current.strip())
            current = ""
            continue
        current += char
    raise ValueError(f"unbalanced Union: {text}")


def incompatible(before: str, now: Dict[str, Tuple[List[str], str]]) -> str:
    r"""Why ``before`` no longer works with the API ``now`` ('' if it does)."""
    name, parameters, returns = split_line(sorted_unions(before))
    if name not in now:
        return "gone"
    new_parameters, new_returns = now[name]
    if new_parameters[: len(parameters)] != parameters:
        return "parameters changed"
    added = new_parameters[len(parameters) :]
    if any(" = " not in p and not p.startswith("*") for p in added):
        return "a new parameter without a default"
    if new_returns != returns:
        return "return changed"
    return ""


def current_api() -> Dict[str, Tuple[List[str], str]]:
    return {
        name: (parameters, returns)
        for name, parameters, returns in (
            split_line(sorted_unions(line)) for line in public_api()
        )
    }


def test_every_public_name_keeps_a_compatible_signature():
    with open(BEFORE, encoding="utf-8") as stream:
        before = [line for line in stream.read().splitlines() if line]
    now = current_api()
    broken = [f"{line}: {why}" for line in before if (why := incompatible(line, now))]
    assert not broken, "Public names lost or changed:\n" + "\n".join(broken)


def test_union_members_compare_in_any_order():
    assert sorted_unions("f(a: Union[str, Module, NoneType] = None)") == (
        "f(a: Union[Module, NoneType, str] = None)"
    )
    nested = "f(a: Union[int, Tuple[Union[str, bytes], int]]) -> Union[b, a]"
    assert sorted_unions(nested) == (
        "f(a: Union[Tuple[Union[bytes, str], int], int]) -> Union[a, b]"
    )
    now = {"m.f": (["a: Union[Module, NoneType, str] = None"], "-> int")}
    assert incompatible("m.f(a: Union[str, Module, NoneType] = None) -> int", now) == ""
    assert incompatible("m.f(a: Union[str, int] = None) -> int", now) != ""


def test_the_compatibility_rule_fails_what_breaks_a_caller():
    now = {"m.f": (["a: int", "b: int = 1", "c: int = 2"], "-> int")}
    assert incompatible("m.f(a: int, b: int = 1) -> int", now) == ""
    assert incompatible("m.g(a: int) -> int", now) == "gone"
    assert incompatible("m.f(b: int = 1) -> int", now) == "parameters changed"
    assert incompatible("m.f(a: int, b: int = 3) -> int", now) == "parameters changed"
    assert incompatible("m.f(a: int, b: int = 1, c: int = 2) -> str", now) == (
        "return changed"
    )
    now = {"m.f": (["a: int", "b: int"], "-> int")}
    assert (
        incompatible("m.f(a: int) -> int", now) == "a new parameter without a default"
    )
    name, parameters, _ = split_line("m.f(x: Dict[str, int] = {'a,b': 1}, *y) -> None")
    assert parameters == ["x: Dict[str, int] = {'a,b': 1}", "*y"]


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


def test_import_and_help_load_no_model_library():
    import subprocess
    import sys

    probe = (
        "import sys, contextlib, io\n"
        "import captum_tracin_we\n"
        "from captum_tracin_we._cli import main\n"
        "for command in (['--help'], ['explain', '--help'], ['explore', '--help'],"
        " ['demo', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(command)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'captum') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]", out
    import captum_tracin_we

    assert captum_tracin_we.TracInWE.__name__ == "TracInWE"  # loaded on first use
