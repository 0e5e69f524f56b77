"""Tokenizer, packing, training loop and sampler of the code LM (tiny sizes, CPU)."""

from __future__ import annotations

import pytest
import torch

from collapse.config import ModelConfig, SampleConfig, TokenizerConfig, TrainConfig
from collapse.lm.model import PRESETS, build_model, count_parameters
from collapse.lm.sample import filter_logits, sample
from collapse.lm.tokenizer import token_byte_lengths, train_tokenizer
from collapse.lm.train import pack, tokenize_texts, train

TEXTS = [f"def f{i}(x):\n    return x + {i}\n" for i in range(200)] + ["class A:\n    pass\n"] * 20


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS, TokenizerConfig(vocab_size=300, min_frequency=2))


def test_tokenizer_round_trips_and_counts_bytes(tok):
    text = "def g(y):\n    return 'é' + y\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    nbytes = token_byte_lengths(tok)
    assert sum(nbytes[i] for i in ids) == len(text.encode("utf-8"))
    assert nbytes[tok.eos_token_id] == 0


def test_pack_joins_documents_with_eos_and_drops_the_tail():
    blocks = pack([[1, 2], [3], [4, 5, 6]], eos_id=0, seq_len=4)
    # stream: 1 2 0 3 0 4 5 6 0 → two full blocks, the tail "0" dropped.
    assert blocks.tolist() == [[1, 2, 0, 3], [0, 4, 5, 6]]
    assert pack([[1, 2], [3]], 0, 4, order=[1, 0]).tolist() == [[3, 0, 1, 2]]


def test_presets_scale():
    sizes = {p: count_parameters(build_model(ModelConfig(preset=p), 32000 if p == "base" else 4096, 0, 0)) for p in PRESETS}
    assert sizes["tiny"] < sizes["small"] < sizes["base"]
    assert 80e6 < sizes["base"] < 130e6  # ~100M parameters


def test_training_lowers_the_loss_and_is_deterministic(tok):
    docs = tokenize_texts(tok, TEXTS)
    eos = tok.eos_token_id
    val = pack(docs[:20], eos, 32)
    cfg = TrainConfig(epochs=3, batch_size=8, lr=5e-3, precision="fp32")

    def fit():
        m = build_model(ModelConfig(preset="tiny", seq_len=32), len(tok), eos, seed=1)
        from collapse.lm.train import block_losses

        before = block_losses(m, val, torch.device("cpu"), "fp32")
        res = train(m, docs, eos, 32, cfg, torch.device("cpu"), seed=0, progress=False)
        after = block_losses(m, val, torch.device("cpu"), "fp32")
        return before["nll"] / before["tokens"], after["nll"] / after["tokens"], res

    b, a, res = fit()
    assert a < b - 1.0
    assert res.steps > 0 and res.tokens == res.steps * 8 * 32
    _, a2, _ = fit()
    assert a2 == a  # same seed, same CPU: bit-identical


def test_top_k_and_top_p_filtering():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    k2 = filter_logits(logits, 1.0, 2, 1.0)
    assert torch.isfinite(k2).tolist() == [[True, True, False, False]]
    p = filter_logits(logits, 1.0, 0, 0.8)  # 0.5 + 0.3 reaches 0.8: keep two
    assert torch.isfinite(p).tolist() == [[True, True, False, False]]
    p = filter_logits(logits, 1.0, 0, 0.81)
    assert torch.isfinite(p).tolist() == [[True, True, True, False]]
    t = filter_logits(logits, 2.0, 0, 1.0)
    assert torch.allclose(t, logits / 2)


def test_greedy_sampler_matches_transformers_generate(tok):
    """Left padding, KV cache and batch compaction must not change the output:
    greedy decoding equals model.generate row by row."""
    # Short, repetitive documents: the model learns to end them, so some rows
    # finish early and leave the batch while others continue.
    docs = tokenize_texts(tok, TEXTS[::4] + ["class A:\n    pass\n"] * 60)
    eos = tok.eos_token_id
    m = build_model(ModelConfig(preset="tiny", seq_len=64), len(tok), eos, seed=3)
    train(m, docs, eos, 64, TrainConfig(epochs=20, batch_size=8, lr=1e-2, precision="fp32"), torch.device("cpu"), 0,
          progress=False)
    m.eval()
    prompts = [[eos], [eos] + tok("def f1", add_special_tokens=False)["input_ids"],
               [eos] + tok("class", add_special_tokens=False)["input_ids"], [eos] + tok("def f17(x):\n", add_special_tokens=False)["input_ids"],
               [eos] + tok("class A:\n    pass\n", add_special_tokens=False)["input_ids"]]
    cfg = SampleConfig(temperature=0.0, max_new_tokens=24, batch_size=3)
    out = sample(m, prompts, cfg, eos, seed=0, device=torch.device("cpu"), progress=False)
    for p, comp, fin in zip(prompts, out.completion_ids, out.finished):
        ref = m.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long), do_sample=False,
                         max_new_tokens=24, eos_token_id=eos, pad_token_id=eos)[0, len(p):].tolist()
        if eos in ref:
            ref = ref[: ref.index(eos)]
            assert fin
        assert comp == ref
    assert any(out.finished)  # the compaction path ran


def test_sampling_is_seeded(tok):
    eos = tok.eos_token_id
    m = build_model(ModelConfig(preset="tiny", seq_len=64), len(tok), eos, seed=3)
    cfg = SampleConfig(max_new_tokens=16, batch_size=4)
    a = sample(m, [[eos]] * 6, cfg, eos, seed=5, device=torch.device("cpu"), progress=False)
    b = sample(m, [[eos]] * 6, cfg, eos, seed=5, device=torch.device("cpu"), progress=False)
    c = sample(m, [[eos]] * 6, cfg, eos, seed=6, device=torch.device("cpu"), progress=False)
    assert a.completion_ids == b.completion_ids != c.completion_ids


def test_split_prompt_cuts_where_the_tokenizer_cuts():
    """The prompt ends before the whitespace run, so prompt tokens + rest tokens are the tokens of the whole."""
    from collapse.lm.sample import split_prompt
    from collapse.config import TokenizerConfig
    from collapse.lm.tokenizer import train_tokenizer

    text = 'def area(w, h):  \n    """Area."""\n    return w * h\n'
    assert split_prompt(text, 1) == ("def area(w, h):", '  \n    """Area."""\n    return w * h\n')
    assert split_prompt(text, 2) == ('def area(w, h):  \n    """Area."""', "\n    return w * h\n")
    assert split_prompt("def f(): pass", 3) == ("def f(): pass", "")
    tok = train_tokenizer([text * 3, "def g(x):\n    return x\n"] * 20, TokenizerConfig(vocab_size=300, min_frequency=1))
    for lines in (1, 2):
        p, rest = split_prompt(text, lines)
        ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]
        assert ids(p) + ids(rest) == ids(text)


def test_an_interrupted_training_resumes_to_the_same_weights(tok, tmp_path):
    """Stopped after step 6 with a state saved every step, then called again: the weights equal
    an uninterrupted run's, and the training curve is reported once per step."""
    docs = tokenize_texts(tok, TEXTS)
    eos = tok.eos_token_id
    cfg = TrainConfig(epochs=1, batch_size=8, lr=5e-3, precision="fp32")
    dev = torch.device("cpu")
    ref = build_model(ModelConfig(preset="tiny", seq_len=32), len(tok), eos, seed=1)
    full = train(ref, docs, eos, 32, cfg, dev, seed=0, progress=False)

    class Stop(Exception):
        pass

    logged = []

    def log(step, values):
        logged.append(step)
        if step == 6 and len(logged) == 6:
            raise Stop

    state = tmp_path / "train_state.pt"
    m = build_model(ModelConfig(preset="tiny", seq_len=32), len(tok), eos, seed=1)
    with pytest.raises(Stop):
        train(m, docs, eos, 32, cfg, dev, seed=0, progress=False, state_path=state, save_every_s=0, on_log=log,
              log_every=1)
    assert torch.load(state, weights_only=False)["step"] == 5  # step 6 was not saved before the stop
    m = build_model(ModelConfig(preset="tiny", seq_len=32), len(tok), eos, seed=1)  # a fresh process
    res = train(m, docs, eos, 32, cfg, dev, seed=0, progress=False, state_path=state, save_every_s=0, on_log=log,
                log_every=1)
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), m.state_dict().values()))
    assert res.steps == full.steps and res.train_loss == full.train_loss
    assert logged == list(range(1, 7)) + list(range(6, full.steps + 1))
