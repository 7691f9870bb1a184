#!/usr/bin/env python3

r"""
The linear layers of a model that TracIn can be computed on: looking them up
by name with a clear error, deciding which parameters count, and naming
groups of them (embedding, attention of early / middle / late blocks,
classifier) in Hugging Face models.
"""

import difflib
from typing import Dict, List, Optional, Sequence, Tuple, Union

from torch import nn
from torch.nn import Module

from captum_tracin_we._errors import TracInWEError

# Attention projections by architecture: (query, value, all projections).
_ATTENTION = [
    ("attention.self.query", "attention.self.value", ("attention.self.key",)),
    ("attention.q_lin", "attention.v_lin", ("attention.k_lin",)),
    ("self_attn.q_proj", "self_attn.v_proj", ("self_attn.k_proj",)),
    ("attn.c_attn", None, ()),  # GPT-2: q, k and v are one fused Conv1D
]
_OUTPUT_PROJECTIONS = (
    "attention.output.dense",
    "attention.out_lin",
    "self_attn.o_proj",
)


def is_linear(module: Module) -> bool:
    r"""``nn.Linear``, or transformers' ``Conv1D`` (GPT-2: ``x @ W + b``)."""
    if isinstance(module, nn.Linear):
        return True
    weight = getattr(module, "weight", None)
    return (
        type(module).__name__ == "Conv1D"
        and hasattr(module, "nf")
        and isinstance(weight, nn.Parameter)
        and weight.dim() == 2
    )


def find_linear_layers(
    model: Module, layers: Sequence[Union[str, Module]]
) -> Tuple[Dict[str, Module], Dict[str, bool]]:
    r"""
    Looks up the layers to score, checked before any work.

    Args:
        model (torch.nn.Module): The model.
        layers (sequence of str or Module): Dotted module names (as in
                    ``model.named_modules()``) or the modules themselves.

    Returns:
        (layers, biases): Name -> module, in the given order; name -> whether
        the layer's bias counts (it exists and is trained with the weight).

    Raises:
        TracInWEError: If ``layers`` is empty or names a module twice, a name does
                    not exist (the closest names are suggested), a module is not
                    linear, or a layer is frozen in a model that trains others.
    """
    if isinstance(layers, (str, Module)) or not layers:
        raise TracInWEError(
            "`layers` must be a non-empty list of module names, for example "
            "['bert.encoder.layer.2.attention.self.query'] or layer_groups(model)[...]."
        )
    named = dict(model.named_modules())
    names = {module: name for name, module in named.items()}
    found: Dict[str, Module] = {}
    for layer in layers:
        name = names.get(layer) if isinstance(layer, Module) else layer
        if name is None or name not in named:
            raise _unknown_layer(layer, named)
        if name in found:
            raise TracInWEError(f"Layer {name!r} is listed twice in `layers`.")
        found[name] = _checked_linear(name, named[name], named)
    trains_some = any(p.requires_grad for p in model.parameters())
    for name, module in found.items():
        if trains_some and not module.weight.requires_grad:
            raise _frozen_layer(name, named)
    biases = {name: _bias_counts(module) for name, module in found.items()}
    return found, biases


def _bias_counts(module: Module) -> bool:
    bias = getattr(module, "bias", None)
    return isinstance(bias, nn.Parameter) and (
        bias.requires_grad or not module.weight.requires_grad
    )


def _checked_linear(name: str, module: Module, named: Dict[str, Module]) -> Module:
    if is_linear(module):
        return module
    inside = [n for n, m in named.items() if n.startswith(name + ".") and is_linear(m)]
    hint = f" Linear layers inside it: {inside[:6]}." if inside else ""
    raise TracInWEError(
        f"Layer {name!r} is a {type(module).__name__}, not an nn.Linear or Conv1D; "
        f"TracIn on layers scores linear maps.{hint}"
    )


def _unknown_layer(
    layer: Union[str, Module], named: Dict[str, Module]
) -> TracInWEError:
    if isinstance(layer, Module):
        return TracInWEError(
            f"The module {type(layer).__name__} passed in `layers` is not part of "
            "the model; pass a module of this model or its dotted name."
        )
    linear = [n for n, m in named.items() if is_linear(m)]
    close = difflib.get_close_matches(layer, linear, n=3, cutoff=0.5)
    hint = f" Closest: {close}." if close else f" Linear layers: {linear[:6]}..."
    return TracInWEError(f"The model has no layer named {layer!r}.{hint}")


def _frozen_layer(name: str, named: Dict[str, Module]) -> TracInWEError:
    trained = [n for n, m in named.items() if is_linear(m) and m.weight.requires_grad]
    owner = name.rsplit(".", 1)[0] if name.endswith(".base_layer") else name
    own = [n for n in trained if n.startswith(owner + ".")]  # its LoRA adapters
    trained = own or trained
    return TracInWEError(
        f"Layer {name!r} is frozen (requires_grad=False) while other parameters "
        "of the model are trained: training never stepped it, so TracIn through "
        f"it describes no training step. Trained linear layers: {trained[:6]}."
    )


class LayerGroups(dict):
    r"""Group name -> module names; a name the model has no group for is a
    ``KeyError`` that lists the groups it has (a 2-block model has no
    ``"attention middle"``)."""

    def __missing__(self, name: str) -> List[str]:
        raise KeyError(
            f"{name!r} is not a layer group of this model; it has {list(self)} "
            "(the block ranges depend on its number of blocks: pass blocks=...)."
        )


def layer_groups(
    model: Module,
    blocks: Optional[Union[int, Sequence[Sequence[int]]]] = None,
    projections: str = "qv",
) -> Dict[str, List[str]]:
    r"""
    Named groups of a transformer's layers, for scoring side by side.

    Args:
        model (torch.nn.Module): A Hugging Face model (BERT, RoBERTa,
                    DistilBERT, GPT-2, Llama-style), LoRA-wrapped or not.
        blocks (int or list of lists of int, optional): How to split the
                    transformer blocks: a number of equal ranges (named
                    ``early``, ``middle``, ``late`` for 3, ``early`` and
                    ``late`` for 2, ``blocks i-j`` otherwise), or explicit
                    block index ranges. Default: None, meaning 3 (2 or 1 for
                    a model with fewer blocks)
        projections (str, optional): ``"qv"`` (the query and value
                    projections, as in the layer-choice study), or ``"all"``
                    (query, key, value and the attention output). Default:
                    ``"qv"``

    Returns:
        groups (dict): Group name -> list of module names, in order:
        ``"classifier"`` (the last linear layer), and one
        ``"attention <range>"`` group per block range. With LoRA adapters the
        trained ``lora_A`` / ``lora_B`` layers stand for each projection.

    Raises:
        TracInWEError: If the model's blocks or attention projections are not
                    found, or ``blocks`` / ``projections`` is invalid.
    """
    if projections not in ("qv", "all"):
        raise TracInWEError(
            f"`projections` must be 'qv' or 'all'; got {projections!r}."
        )
    named = dict(model.named_modules())
    block_names = _block_names(model)
    if blocks is None:
        blocks = min(3, len(block_names))
    ranges = _block_ranges(len(block_names), blocks)
    groups: Dict[str, List[str]] = LayerGroups()
    for label, indices in ranges:
        names = [
            layer
            for i in indices
            for layer in _attention_layers(block_names[i], named, projections)
        ]
        groups[f"attention {label}"] = names
    groups["classifier"] = [_classifier(named)]
    return groups


def last_block(model: Module) -> Module:
    r"""The last transformer block of ``model`` (it outputs the last hidden state)."""
    named = dict(model.named_modules())
    return named[_block_names(model)[-1]]


def _block_names(model: Module) -> List[str]:
    best: Optional[Tuple[str, Module]] = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if best is None or len(module) > len(best[1]):
                kinds = {type(child).__name__ for child in module}
                if len(kinds) == 1 and any(is_linear(m) for m in module[0].modules()):
                    best = (name, module)
    if best is None:
        raise TracInWEError(
            f"{type(model).__name__} has no list of transformer blocks; pass the "
            "layers to score by name instead of layer_groups(model)."
        )
    return [f"{best[0]}.{i}" for i in range(len(best[1]))]


def _block_ranges(
    count: int, blocks: Union[int, Sequence[Sequence[int]]]
) -> List[Tuple[str, List[int]]]:
    if isinstance(blocks, int) and not isinstance(blocks, bool):
        if not 1 <= blocks <= count:
            raise TracInWEError(
                f"`blocks` must be between 1 and the model's {count} blocks; "
                f"got {blocks}."
            )
        bounds = [round(i * count / blocks) for i in range(blocks + 1)]
        spans = [list(range(bounds[i], bounds[i + 1])) for i in range(blocks)]
    else:
        spans = [list(span) for span in blocks]
        if not spans or any(not s or min(s) < 0 or max(s) >= count for s in spans):
            raise TracInWEError(
                f"`blocks` ranges must hold block indices 0..{count - 1}; got {blocks}."
            )
    words = {2: ["early", "late"], 3: ["early", "middle", "late"]}.get(len(spans))
    return [
        (words[i] if words else f"blocks {s[0]}-{s[-1]}", s)
        for i, s in enumerate(spans)
    ]


def _attention_layers(
    block: str, named: Dict[str, Module], projections: str
) -> List[str]:
    for query, value, others in _ATTENTION:
        if f"{block}.{query}" in named:
            chosen = [query] + ([value] if value else [])
            if projections == "all":
                chosen += list(others) + [
                    p for p in _OUTPUT_PROJECTIONS if f"{block}.{p}" in named
                ]
                if query == "attn.c_attn" and f"{block}.attn.c_proj" in named:
                    chosen.append("attn.c_proj")
            return [name for p in chosen for name in _trained(f"{block}.{p}", named)]
    raise TracInWEError(
        f"No attention projections found in block {block!r}; pass the layers to "
        "score by name instead of layer_groups(model)."
    )


def _trained(name: str, named: Dict[str, Module]) -> List[str]:
    r"""The LoRA adapters of a projection where it has them, else the projection."""
    adapters = [
        n
        for n, m in named.items()
        if (n.startswith(f"{name}.lora_A.") or n.startswith(f"{name}.lora_B."))
        and is_linear(m)
    ]
    if adapters:
        return adapters
    if is_linear(named[name]):
        return [name]
    base = f"{name}.base_layer"
    return [base] if base in named and is_linear(named[base]) else []


def _classifier(named: Dict[str, Module]) -> str:
    linear = [n for n, m in named.items() if is_linear(m) and "lora_" not in n]
    if not linear:
        raise TracInWEError("The model has no linear layer to use as the classifier.")
    last = linear[-1]
    inner = f"{last}.modules_to_save.default"  # a PEFT-trained head
    return inner if inner in named and is_linear(named[inner]) else last
