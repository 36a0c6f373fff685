"""Scoring a perturbed scope from the decoder layer it perturbs.

A scope at layer L changes nothing below L: the hidden state entering layer L is the
unperturbed model's, for every scope of that layer. So the probe records, once, the state
entering each decoder layer, and a scope's pass starts at its layer from that state. The
layers run are the same modules on the same inputs as in a full pass, so the log-probs are
the same bit for bit (a test compares them), for about half the work over 30 layers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from shrinktests.run.engine import ChunkForward


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The decoder's layer list where the model has the usual ``model.model.layers`` layout
    (Llama, Mistral, Qwen, ...); None elsewhere (then every pass runs whole)."""
    import torch

    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if isinstance(layers, torch.nn.ModuleList) and hasattr(inner, "embed_tokens"):
        return layers
    return None


class LayerInputs:
    """The hidden states entering every decoder layer of the unperturbed model, per chunk of
    a teacher-forced pass (float32 like the model: ~2.3 KB per token and layer for a
    576-wide model, 70 MB for the default atlas probe)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.layers = decoder_layers(model)
        self.chunks: list[list[torch.Tensor]] = []

    @property
    def usable(self) -> bool:
        return self.layers is not None

    def recording(self) -> ChunkForward:
        """A chunk forward that runs the whole model and keeps each layer's input."""
        def forward(n: int, ids: torch.Tensor, mask: torch.Tensor,
                    kwargs: dict[str, Any]) -> torch.Tensor:
            assert self.layers is not None
            seen: list[torch.Tensor] = []
            hooks = [layer.register_forward_pre_hook(
                lambda _m, args, kw: seen.append((args[0] if args else kw["hidden_states"])
                                                 .detach()), with_kwargs=True)
                for layer in self.layers]
            try:
                logits: torch.Tensor = self.model(input_ids=ids, attention_mask=mask,
                                                  **kwargs).logits
            finally:
                for h in hooks:
                    h.remove()
            if len(seen) != len(self.layers):
                raise RuntimeError(f"recorded {len(seen)} layer inputs, expected "
                                   f"{len(self.layers)}")
            del self.chunks[n:]
            self.chunks.append(seen)
            return logits
        return forward

    def from_layer(self, layer: int) -> ChunkForward:
        """A chunk forward that runs layers ``layer``.. only, from the recorded state."""
        def forward(n: int, ids: torch.Tensor, mask: torch.Tensor,
                    kwargs: dict[str, Any]) -> torch.Tensor:
            with self._only_from(layer):
                logits: torch.Tensor = self.model(inputs_embeds=self.chunks[n][layer],
                                                  attention_mask=mask, **kwargs).logits
            return logits
        return forward

    @contextmanager
    def _only_from(self, layer: int) -> Iterator[None]:
        import torch

        assert self.layers is not None
        inner = self.model.get_submodule("model")
        inner.layers = torch.nn.ModuleList(list(self.layers)[layer:])
        try:
            yield
        finally:
            inner.layers = self.layers
