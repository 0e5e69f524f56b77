"""Byte-level BPE tokenizer, trained once on the human train split.

The same tokenizer serves every generation of every regime: it is part of the
experiment's fixed measuring apparatus, so token-level metrics of different
generations are comparable. Saved as a ``PreTrainedTokenizerFast``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

from collapse.config import TokenizerConfig
from collapse.errors import CollapseError

EOS = "<|endoftext|>"


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig):
    """Train a byte-level BPE on ``texts``; ``<|endoftext|>`` separates documents
    and doubles as BOS, EOS and padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS, unk_token=None)


def load_tokenizer(path: str | Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(path))


def load_checkpoint_tokenizer(name_or_path: str):
    """The tokenizer saved with a checkpoint (``model.init_from``), with an EOS
    token that also serves as padding."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise CollapseError(f"model.init_from: no tokenizer found with the checkpoint {name_or_path!r} ({str(e).splitlines()[0]})") from None
    if tok.eos_token_id is None:
        raise CollapseError(f"model.init_from: the tokenizer of {name_or_path!r} has no EOS token")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def prepare_tokenizer(texts: list[str], cfg: TokenizerConfig, cache_dir: Path, key: str):
    """Train (or load from the cache) the experiment's tokenizer. Written
    atomically: a temp folder renamed into place."""
    final = Path(cache_dir) / f"tokenizer-{key}"
    if not final.exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        tok = train_tokenizer(texts, cfg)
        tmp = Path(tempfile.mkdtemp(prefix=".tok-", dir=final.parent))
        tok.save_pretrained(str(tmp))
        try:
            os.rename(tmp, final)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    return load_tokenizer(final), final


def token_byte_lengths(tokenizer) -> list[int]:
    """UTF-8 bytes each token id stands for (0 for special tokens), for bits per
    byte. Byte-level BPE maps every byte to exactly one printable character, so
    a token's byte count is the length of its piece."""
    special = set(tokenizer.all_special_ids)
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return [0 if i in special else len(p) for i, p in enumerate(pieces)]
