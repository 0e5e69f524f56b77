"""The model size presets: the registry ``model.preset`` names.

Kept apart from :mod:`collapse.lm.model` so that checking a config's preset
(and listing the presets in ``--help-config``) does not import torch.
"""

from __future__ import annotations

__all__ = ["PRESETS"]

#: Preset name -> model dimensions; explicit ``model.*`` fields override them.
#: Sized for where they run: tiny for tests, small for the CPU quickstart, base for GPUs.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=176, seq_len=128),
    "small": dict(hidden_size=128, num_layers=3, num_heads=4, intermediate_size=352, seq_len=256),
    "base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=2048, seq_len=1024),
}
