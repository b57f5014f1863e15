"""Published flavors, built on the meta device, have the published parameter counts."""
from __future__ import annotations

import pytest
import torch

from training.model.flavors import FLAVORS
from training.model.qwen import Qwen

# (total, active) in billions, from the model cards / Qwen2 technical report (Yang et al. 2024).
PUBLISHED = {
    "qwen-7b": (7.72, None), "qwen-14b": (14.17, None),
    "qwen2-0.5b": (0.494, None), "qwen2-1.5b": (1.544, None), "qwen2-7b": (7.616, None), "qwen2-72b": (72.71, None),
    "qwen2-57b-a14b": (57.41, 14.25), "qwen1.5-moe-a2.7b": (14.3, 2.7),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts(name):
    with torch.device("meta"):
        model = Qwen(FLAVORS[name])
    total, active = PUBLISHED[name]
    assert model.num_params() / 1e9 == pytest.approx(total, rel=5e-3)
    if active:
        assert model.num_params(active=True) / 1e9 == pytest.approx(active, rel=5e-3)


def test_debug_flavors_are_small_with_qwen_vocab():
    for name in ("debug", "debug-moe"):
        cfg = FLAVORS[name]
        assert cfg.vocab_size >= 151646 and Qwen(cfg).num_params() < 25e6
    out = Qwen(FLAVORS["debug-moe"])(torch.tensor([[151644, 872, 151645]]))
    assert out.logits.shape == (1, 3, 151936) and out.aux_loss is not None
