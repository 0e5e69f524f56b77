"""Model presets: transformers Llama causal LMs built from a config.

The model is a plain ``LlamaForCausalLM``; devices, precision and training
wrap it from outside. Presets are sized for where they run: ``tiny`` for
tests (seconds on a CPU), ``small`` for the CPU quickstart, ``base`` (~100M
parameters with a 32k vocabulary) for GPUs.
"""

from __future__ import annotations

PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=176, seq_len=128),
    "small": dict(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=352, seq_len=256),
    "base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=2048, seq_len=1024),
}
