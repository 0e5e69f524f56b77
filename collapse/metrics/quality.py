"""Quality: how well the model predicts held-out human code, and whether its samples parse."""

from __future__ import annotations

import ast
import math
import warnings

from collapse.metrics.registry import MetricContext, register


@register("test_ce", needs_model=True)
def test_ce(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Held-out human cross-entropy of the model: ``test_ce`` in nats per token
    on the packed human test split, and ``test_bpb``, bits per UTF-8 byte
    (tokenizer-independent). Lower is better; rising across generations is the
    signature of collapse (Shumailov et al. 2024)."""
    from collapse.lm.train import block_losses

    r = block_losses(ctx.model, ctx.test_blocks, ctx.device, ctx.precision, ctx.eval_batch_size, ctx.token_bytes)
    out = {"test_ce": r["nll"] / r["tokens"]}
    if r["bytes"]:
        out["test_bpb"] = r["nll"] / (math.log(2) * r["bytes"])
    return out


@register("val_loss", needs_model=True)
def val_loss(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Cross-entropy (nats/token) of the model on the packed human validation split."""
    from collapse.lm.train import block_losses

    r = block_losses(ctx.model, ctx.val_blocks, ctx.device, ctx.precision, ctx.eval_batch_size)
    return {"val_loss": r["nll"] / r["tokens"]}


def parses(text: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SyntaxWarning on odd escapes in generated code
        try:
            ast.parse(text)
            return True
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return False


@register("syntax_valid")
def syntax_valid(samples: list[str], ctx: MetricContext) -> dict[str, float]:
    """Share of samples that ``ast.parse`` accepts, in [0, 1]. Generated code is
    only parsed here, never executed."""
    if not samples:
        return {"syntax_valid": 0.0}
    return {"syntax_valid": sum(parses(s) for s in samples) / len(samples)}
