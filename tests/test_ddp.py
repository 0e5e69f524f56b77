"""Data-parallel training: 2 CPU processes under torchrun (gloo) train the model one process trains."""

from __future__ import annotations

import copy

import pytest
import torch

from collapse.config import ModelConfig, TrainConfig
from collapse.lm.ddp import fit_distributed
from collapse.lm.model import build_model
from collapse.lm.train import train

pytestmark = pytest.mark.slow


def test_two_gloo_processes_match_one_process(tmp_path):
    V, seq_len = 64, 32
    g = torch.Generator().manual_seed(0)
    docs = [torch.randint(1, V, (int(n),), generator=g).tolist() for n in torch.randint(10, 60, (120,), generator=g)]
    cfg = TrainConfig(epochs=1, batch_size=8, lr=3e-3, max_steps=12, nproc=2)
    model = build_model(ModelConfig(preset="tiny", seq_len=seq_len), V, 0, seed=3)
    start = copy.deepcopy(model.state_dict())
    cpu = torch.device("cpu")

    single = train(model, docs, 0, seq_len, cfg, cpu, seed=11, progress=False)
    ddp_model = build_model(ModelConfig(preset="tiny", seq_len=seq_len), V, 0, seed=3)
    assert all(torch.equal(ddp_model.state_dict()[k], v) for k, v in start.items())
    trained, res = fit_distributed(ddp_model, docs, 0, seq_len, cfg, cpu, seed=11, precision="fp32", nproc=2,
                                   progress=False, workdir=tmp_path)
    assert res.steps == single.steps == 12
    assert res.train_loss == pytest.approx(single.train_loss, rel=1e-4)
    diffs = [float((trained.state_dict()[k] - v).abs().max()) for k, v in model.state_dict().items()]
    assert max(diffs) < 1e-4, max(diffs)
    # Training moved the weights (the comparison above is not between two untouched models).
    assert max(float((model.state_dict()[k] - v).abs().max()) for k, v in start.items()) > 1e-3
    assert not list(tmp_path.iterdir())  # the job folder is cleaned up


def test_failed_distributed_training_is_one_clear_error(tmp_path):
    from collapse.errors import CollapseError

    model = build_model(ModelConfig(preset="tiny", seq_len=16), 32, 0, seed=0)
    with pytest.raises(CollapseError, match="distributed training with 2 processes failed"):
        fit_distributed(model, [], 0, 16, TrainConfig(batch_size=4, nproc=2), torch.device("cpu"), seed=0,
                        precision="fp32", nproc=2, progress=False, workdir=tmp_path)
