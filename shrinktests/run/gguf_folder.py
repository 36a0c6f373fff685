"""A GGUF file written out as a plain safetensors model folder, its tensors read once.

``from_pretrained(gguf_file=...)`` in transformers took about 35 s on 2 cores for the
135M-parameter default model, mostly in overhead: it parses the file's whole metadata (49k
tokens and merges) once each for the tokenizer, the config and the weights, builds a throwaway
randomly initialized model, and rebuilds its GGUF-to-model name map for every submodule
(9 s alone). A cold run pays this before its first test, so here:

- the tokenizer and the config still come from transformers (they pick the tokenizer class and
  map the config keys per architecture);
- the model is built on the ``meta`` device (no random initialization), and the name map is
  made once from the ``gguf`` package's tensor-name table;
- the tensors are read once and dequantized by the ``gguf`` package, then passed through
  transformers' per-architecture fix-ups (Llama's q/k permutation and the like).

A file whose tensors do not all map this way (architectures that transformers loads through a
submodule, or merges expert tensors into one) goes through ``from_pretrained`` as before.
A test checks that both ways give the same weights bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_gguf_folder(gguf: Path, folder: Path) -> None:
    """Dequantize ``gguf`` into a safetensors model folder ``folder``: a temporary one, which
    the caller renames whole once it is complete (``model._convert_gguf``)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                              trust_remote_code=False)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False)
    # the GGUF quantization_config would make transformers look for the GGUF file again
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32,
                                                 trust_remote_code=False)
    state = gguf_state_dict(gguf, model)
    if state is None:
        model = _through_transformers(gguf, config)
    else:
        model.load_state_dict(state, strict=False, assign=True)
        model.tie_weights()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def gguf_state_dict(gguf: Path, model: Any) -> dict[str, Any] | None:
    """The file's tensors under ``model``'s parameter names, dequantized to float32; ``None``
    when some parameter of ``model`` would be left without a tensor (tied ones aside)."""
    import numpy as np
    import torch
    from gguf import MODEL_ARCH_NAMES, GGUFReader, dequantize, get_tensor_name_map
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

    reader = GGUFReader(gguf)
    arch_field = reader.fields["general.architecture"]
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode("utf-8")
    arch_id = next((key for key, name in MODEL_ARCH_NAMES.items() if name == arch), None)
    if arch_id is None:
        return None
    config = model.config.to_dict()
    processor_class: Any = TENSOR_PROCESSORS.get(arch, TensorProcessor)
    processor = processor_class(config=config)
    names = get_tensor_name_map(arch_id, model.config.num_hidden_layers)
    to_model: dict[str, str] = {}
    for param in model.state_dict():
        stem, dot, suffix = processor.preprocess_name(param).rpartition(".")
        gguf_name = names.get_name(stem) if dot else None
        if gguf_name is None:
            processor.perform_fallback_tensor_mapping(to_model, f".{suffix}", "", param)
        else:
            to_model[f"{gguf_name}.{suffix}"] = param

    parsed: dict[str, Any] = {"config": config, "tensors": {}}
    for tensor in reader.tensors:
        result = processor.process(weights=dequantize(tensor.data, tensor.tensor_type),
                                   name=tensor.name, tensor_key_mapping=to_model,
                                   parsed_parameters=parsed)
        if result.name in to_model:
            parsed["tensors"][to_model[result.name]] = torch.from_numpy(np.copy(result.weights))
    state: dict[str, Any] = parsed["tensors"]
    tied = set(model._tied_weights_keys or {}) if config.get("tie_word_embeddings") else set()
    missing = set(model.state_dict()) - set(state) - tied
    return None if missing else state


def _through_transformers(gguf: Path, config: Any) -> Any:
    """transformers' own GGUF loading, for files the name table above cannot map."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32, trust_remote_code=False)
    clean = type(model)(config)
    clean.load_state_dict(model.state_dict())
    return clean
