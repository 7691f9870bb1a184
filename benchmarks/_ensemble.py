#!/usr/bin/env python3

r"""
Trains many small models side by side as one ``torch.func.vmap`` ensemble: the
``train_many_fn`` of ``case_deletion`` for the reproduction's retrains.

Model ``j`` is trained exactly as the one-at-a-time trainer would train it on
``kept_lists[j]`` with ``seeds[j]``: the same initial weights (built after
``torch.manual_seed(seed)``), the same batch order (a ``torch.Generator``
seeded with ``seed``), the same Adam (element-wise, so stacking the models'
parameters changes nothing). Batches are padded to the widest of the step, which
the reproduction's models ignore (pad positions are masked), so results match
the one-at-a-time trainer up to floating-point summation order. Models must be
free of dropout and running statistics (both would need per-model randomness or
in-place buffer updates under ``vmap``), and must not rely on
``nn.Embedding``'s ``padding_idx`` to keep the padding row fixed: under ``vmap``
(torch 2.13) the padding row of every model but the first gets gradients.
"""

import copy
import os
from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap


def train_ensemble(
    make_model: Callable[[], nn.Module],
    ids: Tensor,
    labels: Tensor,
    kept_lists: Sequence[Sequence[int]],
    seeds: Sequence[int],
    epochs: int,
    lr: float,
    batch: int,
    pad_id: int = 0,
    device: str = "cpu",
    autocast_dtype: Optional[torch.dtype] = None,
    save_to: Optional[str] = None,
) -> List[nn.Module]:
    r"""
    Args:
        make_model (Callable): Builds one freshly initialised model.
        ids (Tensor): ``(n_train, length)`` token ids, padded with ``pad_id``.
        labels (Tensor): ``(n_train,)`` class labels.
        kept_lists (sequence): The training indices of each model; all of the
                    same length.
        seeds (sequence of int): Each model's seed.
        epochs, lr, batch: The training recipe (Adam).
        pad_id (int, optional): Padding id. Default: 0
        device (str, optional): Where to train. Default: "cpu"
        autocast_dtype (torch.dtype, optional): Run the forward pass under
                    ``torch.autocast`` with this dtype (bfloat16 on a GPU);
                    parameters and optimizer stay float32. Default: None
        save_to (str, optional): For a single model: save a checkpoint
                    ``{"model_state_dict", "learning_rate"}`` after every epoch
                    in this folder, as ``checkpoint-<epoch>.pt``. Default: None

    Returns:
        models (list of nn.Module): The trained models, on the CPU, in eval mode.
    """
    sizes = {len(kept) for kept in kept_lists}
    if len(sizes) != 1:
        raise ValueError(f"All models must keep as many examples; got sizes {sizes}.")
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(make_model())
    params, buffers = stack_module_state([m.to(device) for m in models])
    template = copy.deepcopy(models[0]).to("meta")

    def logits(p, b, x):
        return functional_call(template, (p, b), (x,))

    forward = vmap(logits)
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    kept = [torch.as_tensor(list(k)) for k in kept_lists]
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    if save_to is not None and len(models) != 1:
        raise ValueError("`save_to` saves the checkpoints of a single model.")
    for epoch in range(epochs):
        orders = torch.stack(
            [k[torch.randperm(len(k), generator=g)] for k, g in zip(kept, generators)]
        )
        for start in range(0, orders.shape[1], batch):
            rows = orders[:, start : start + batch]
            x = ids[rows]
            width = int((x != pad_id).sum(-1).max())
            x, y = x[..., :width].to(device), labels[rows].to(device)
            with torch.autocast(
                torch.device(device).type,
                dtype=autocast_dtype or torch.float32,
                enabled=autocast_dtype is not None,
            ):
                out = forward(params, buffers, x).float()
            loss = nn.functional.cross_entropy(
                out.flatten(0, 1), y.flatten(), reduction="none"
            )
            optimizer.zero_grad()
            loss.view(y.shape).mean(dim=1).sum().backward()
            optimizer.step()
        if save_to is not None:
            _save_checkpoint(models[0], params, buffers, lr, save_to, epoch)
    for j, model in enumerate(models):
        _load(model, params, buffers, j)
        model.to("cpu").eval()
    return models


def _load(model: nn.Module, params, buffers, j: int) -> None:
    stacked = {**params, **buffers}
    model.load_state_dict({name: stacked[name][j] for name in model.state_dict()})


def _save_checkpoint(model, params, buffers, lr: float, folder: str, epoch: int):
    _load(model, params, buffers, 0)
    state = {name: value.detach().cpu() for name, value in model.state_dict().items()}
    path = os.path.join(folder, f"checkpoint-{epoch}.pt")
    torch.save({"model_state_dict": state, "learning_rate": lr}, path)
