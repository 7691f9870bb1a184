#!/usr/bin/env python3

r"""
What an index is bound to besides its data and checkpoints: the identity of
the training loss and of the embedding module, as JSON-safe records that an
index stores and compares on attaching and on resuming a build. Also the
wording of a mismatch ("built with X, now Y").

A loss is described as far as it can be identified:

- an ``nn.Module``: its class, and its state: plain attributes (``reduction``,
  ``label_smoothing``, ``ignore_index``, ...) by ``repr``, tensors
  (parameters, buffers such as ``weight`` and ``pos_weight``, tensor
  attributes) by dtype, shape and SHA-256, submodules the same way;
- a function or method: its module and qualified name;
- a ``functools.partial``: its function, and its arguments described as above;
- another callable object: its class and public attributes.

A lambda or local function is named by its qualified name (``<lambda>``,
``<locals>`` included); its body is not checked, so two lambdas defined at the
same place are not told apart.
"""

import functools
import hashlib
import inspect
import json
from typing import Any, Callable, Dict, List, Mapping

import numpy as np
import torch
from torch import Tensor
from torch.nn import Module

_MAX_DEPTH = 4  # submodules of a loss described this deep
_MAX_REPR = 200


def loss_identity(loss_fn: Callable[..., Tensor]) -> Dict[str, str]:
    r"""
    A flat record of what a training loss is, as far as it can be identified.

    Args:
        loss_fn (Callable): The loss.

    Returns:
        identity (dict of str to str): ``"kind"`` (module, partial, function,
                    method or object), the loss's name, and its settings by name.
    """
    if isinstance(loss_fn, Module):
        return {"kind": "module", "class": _qualified(type(loss_fn)), **_state(loss_fn)}
    if isinstance(loss_fn, functools.partial):
        return {
            "kind": "partial",
            "function": _callable_name(loss_fn.func),
            "args": _describe(loss_fn.args),
            "keywords": _describe(dict(loss_fn.keywords)),
        }
    if inspect.ismethod(loss_fn):
        return {
            "kind": "method",
            "function": _callable_name(loss_fn.__func__),
            "owner": _qualified(type(loss_fn.__self__)),
        }
    if inspect.isfunction(loss_fn) or inspect.isbuiltin(loss_fn):
        return {"kind": "function", "function": _callable_name(loss_fn)}
    return {
        "kind": "object",
        "class": _qualified(type(loss_fn)),
        **_attributes(loss_fn, ""),
    }


def embedding_identity(model: Module, embedding: Module) -> Dict[str, Any]:
    r"""
    A record of the embedding module whose word gradients an index stores.

    Args:
        model (torch.nn.Module): The model.
        embedding (torch.nn.Module): Its token-embedding module.

    Returns:
        identity (dict): ``name`` (dotted name in ``model``, None when it is not
                    a submodule), ``class``, ``num_embeddings``,
                    ``embedding_dim``, ``padding_idx`` and ``max_norm``.
    """
    name = next((n for n, m in model.named_modules() if m is embedding), None)
    max_norm = getattr(embedding, "max_norm", None)
    return {
        "name": name,
        "class": _qualified(type(embedding)),
        "num_embeddings": int(embedding.num_embeddings),
        "embedding_dim": int(embedding.embedding_dim),
        "padding_idx": getattr(embedding, "padding_idx", None),
        "max_norm": None if max_norm is None else float(max_norm),
    }


def differences(built: Mapping[str, Any], now: Mapping[str, Any]) -> List[str]:
    r"""
    What differs between two records, one ``"<key>: built with X, now Y"``
    per key (nested records by dotted key).
    """
    found = []
    for key in sorted(set(built) | set(now)):
        before, after = built.get(key, _ABSENT), now.get(key, _ABSENT)
        if before == after:
            continue
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            found.extend(f"{key}.{line}" for line in differences(before, after))
        else:
            name = key in _NAME_KEYS  # a name, shown quoted as the text it is
            found.append(
                f"{key}: built with {_shown(before, name)}, now {_shown(after, name)}"
            )
    return found


class _Absent:
    def __repr__(self) -> str:
        return "(not set)"


_ABSENT = _Absent()


# Keys whose values are names (other string values are already descriptions).
_NAME_KEYS = {"kind", "class", "function", "owner", "name"}


def _shown(value: Any, name: bool = False, limit: int = 90) -> str:
    text = value if isinstance(value, str) and not name else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _qualified(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _callable_name(function: Any) -> str:
    module = getattr(function, "__module__", None) or "?"
    name = getattr(function, "__qualname__", None) or type(function).__qualname__
    return f"{module}.{name}"


def _state(module: Module, prefix: str = "", depth: int = 0) -> Dict[str, str]:
    r"""A module's plain attributes, tensors and submodules, by dotted name."""
    state = _attributes(module, prefix)
    tensors = {**module._parameters, **module._buffers}
    for name in sorted(tensors):
        state[prefix + name] = _describe(tensors[name])
    for name, child in sorted(module._modules.items()):
        if child is None or depth >= _MAX_DEPTH:
            state[prefix + name] = _describe(child)
            continue
        state[prefix + name] = _qualified(type(child))
        state.update(_state(child, f"{prefix}{name}.", depth + 1))
    return state


def _attributes(owner: Any, prefix: str) -> Dict[str, str]:
    r"""Public instance attributes (not ``training``), described."""
    try:
        items = vars(owner)
    except TypeError:
        return {}
    return {
        prefix + name: _describe(value)
        for name, value in sorted(items.items())
        if not name.startswith("_") and name != "training"
    }


def _describe(value: Any) -> str:
    r"""A stable text for a setting: equal settings, equal texts."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    if isinstance(value, Tensor):
        return _tensor_text(value)
    if isinstance(value, np.ndarray) and value.dtype != object:
        return _tensor_text(torch.from_numpy(np.ascontiguousarray(value)))
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_describe(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    if isinstance(value, dict):
        inner = ", ".join(
            f"{_describe(k)}: {_describe(value[k])}" for k in sorted(value, key=repr)
        )
        return "{" + inner + "}"
    if isinstance(value, Module):
        text = json.dumps(_state(value), sort_keys=True)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return f"{_qualified(type(value))} state sha256:{digest}"
    if callable(value) and hasattr(value, "__qualname__"):
        return _callable_name(value)
    text = repr(value)
    if " at 0x" in text or len(text) > _MAX_REPR:
        return f"a {_qualified(type(value))} (its value is not checked)"
    return text


def _tensor_text(tensor: Tensor) -> str:
    data = tensor.detach().cpu().contiguous().reshape(-1)
    digest = hashlib.sha256(data.view(torch.uint8).numpy().tobytes()).hexdigest()
    return f"tensor {str(tensor.dtype)[6:]} {list(tensor.shape)} sha256:{digest}"
