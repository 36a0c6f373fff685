"""Running a decoder model one layer at a time on calibration prompts.

Methods that learn from the inputs each linear layer reads (GPTQ's Hessians, EoRA's input
covariances) need those inputs layer by layer. A full forward pass per prompt with hooks on
every module would hold the whole model's inputs at once (for a 30-layer model on about 1,700
calibration tokens, 0.65 GB in float32). Here the hidden states entering the first wanted
layer are captured once; then each layer is run alone on them, its modules' inputs are taken
by hooks, and its outputs become the next layer's inputs. Only one layer's inputs and one set
of hidden states are held at a time, and the numbers are those of the full pass: each layer
runs the same operations on the same tensors with the same keyword arguments.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

ModuleT = TypeVar("ModuleT", bound="torch.nn.Module")

#: ``<container>.layers.<i>.`` in a module name: the decoder layer it belongs to
LAYER = re.compile(r"^(.*?layers)\.(\d+)\.")


class Stop(Exception):
    """Raised by a hook to end a forward pass once the wanted inputs are captured."""


def split_by_layer(
    modules: Sequence[tuple[str, ModuleT]],
) -> tuple[dict[tuple[str, int], list[tuple[str, ModuleT]]], list[tuple[str, ModuleT]]]:
    """``modules`` grouped by (layer container, layer index), and the rest (an LM head)."""
    by_layer: dict[tuple[str, int], list[tuple[str, ModuleT]]] = {}
    rest: list[tuple[str, ModuleT]] = []
    for name, module in modules:
        m = LAYER.match(name)
        if m is None:
            rest.append((name, module))
        else:
            by_layer.setdefault((m.group(1), int(m.group(2))), []).append((name, module))
    return by_layer, rest


def full_passes(model: torch.nn.Module,
                calibration: Sequence[torch.Tensor]) -> Callable[[], None]:
    """``run()``: the whole model on each calibration prompt (a hook may :class:`Stop` one)."""
    import torch

    def run() -> None:
        with torch.no_grad():
            for ids in calibration:
                with contextlib.suppress(Stop):
                    model(input_ids=ids.reshape(1, -1), use_cache=False)
    return run


def capture_layer_inputs(
    model: torch.nn.Module, layers: Any, first: int, calibration: Sequence[torch.Tensor],
) -> tuple[list[torch.Tensor], list[list[dict[str, Any]]]]:
    """The hidden states entering layer ``first`` and every layer's keyword arguments
    (rotary embeddings, masks: per layer, since layer types may differ), per sample."""
    hidden: list[torch.Tensor] = []
    kwargs: list[list[dict[str, Any]]] = [[] for _ in range(len(layers))]

    def pre_hook(i: int) -> Any:
        def hook(_m: torch.nn.Module, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
            states = args[0] if args else kw["hidden_states"]
            if i == first:
                hidden.append(states.detach())
            kwargs[i].append({k: v for k, v in kw.items() if k != "hidden_states"})
            if i == len(layers) - 1:
                raise Stop
        return hook

    handles = [layer.register_forward_pre_hook(pre_hook(i), with_kwargs=True)
               for i, layer in enumerate(layers)]
    try:
        full_passes(model, calibration)()
    finally:
        for h in handles:
            h.remove()
    return hidden, kwargs


def layer_runner(layer: torch.nn.Module, hidden: list[torch.Tensor],
                 kwargs: list[dict[str, Any]]) -> Any:
    """``run(limit=None)``: the layer over the first ``limit`` samples' hidden states; returns
    its outputs. A hook may raise :class:`Stop` to end one sample's pass early, once the
    inputs it wants are seen (the rest of the layer is then not computed)."""
    import torch

    def run(limit: int | None = None) -> list[torch.Tensor]:
        outs = []
        with torch.no_grad():
            for states, kw in list(zip(hidden, kwargs, strict=True))[:limit]:
                try:
                    out = layer(states, **kw)
                except Stop:
                    continue
                outs.append((out[0] if isinstance(out, tuple) else out).detach())
        return outs
    return run


def layer_list(model: torch.nn.Module, container: str) -> torch.nn.ModuleList:
    """The layer list named ``container`` (``model.layers``)."""
    import typing

    return typing.cast("torch.nn.ModuleList", model.get_submodule(container))
