"""Model presets: transformers Llama causal LMs built from a config.

The model is a plain ``LlamaForCausalLM``; devices, precision and training
wrap it from outside. Presets are sized for where they run: ``tiny`` for
tests (seconds on a CPU), ``small`` for the CPU quickstart, ``base`` (~100M
parameters with a 32k vocabulary) for GPUs. Checkpoints are written with
``save_pretrained`` (safetensors).
"""

from __future__ import annotations

from pathlib import Path

import torch

from collapse.config import ModelConfig
from collapse.lm.presets import PRESETS


#: A file in every checkpoint folder that ``collapse pretrain`` wrote: what built it (key, recipe, results).
BASE_MARKER = "collapse_pretrain.json"


def resolved_dims(cfg: ModelConfig) -> dict[str, int]:
    """Preset values with explicit config fields taking precedence."""
    dims = dict(PRESETS[cfg.preset])
    for k in dims:
        v = getattr(cfg, k)
        if v is not None:
            dims[k] = v
    return dims


def build_model(cfg: ModelConfig, vocab_size: int, eos_id: int, seed: int):
    """A freshly initialized Llama (seeded), or the checkpoint ``cfg.init_from``."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    if cfg.init_from:
        model = AutoModelForCausalLM.from_pretrained(cfg.init_from)
        return model
    d = resolved_dims(cfg)
    mc = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=d["hidden_size"],
        intermediate_size=d["intermediate_size"],
        num_hidden_layers=d["num_layers"],
        num_attention_heads=d["num_heads"],
        num_key_value_heads=d["num_heads"],
        max_position_embeddings=d["seq_len"],
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(mc)
    return model


def load_model(path: str | Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path))


def save_model(model, path: str | Path) -> None:
    model.save_pretrained(str(path), safe_serialization=True)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


#: CPU flags that change which kernels torch runs (and so the floating-point sums, and so the samples).
_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "fma")


def runtime_info(device: torch.device, precision: str) -> dict[str, str]:
    """What a run's numbers depend on besides its config: the precision actually used, the device,
    torch's CPU capability and thread count, the CPU model and its vector flags. Runs are identical
    only when these (and the seed) are."""
    import platform

    info = {"precision": precision, "device": str(device), "torch": torch.__version__,
            "cpu_capability": str(torch.backends.cpu.get_cpu_capability()), "torch_threads": str(torch.get_num_threads()),
            "machine": platform.machine()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        if line.startswith("model name") and "cpu_model" not in info:
            info["cpu_model"] = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            info["cpu_flags"] = " ".join(f for f in _CPU_FLAGS if f in have)
            break
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
