"""Tests of deepfake.losses: the sum-over-time BCE against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from deepfake.losses import SequenceBCELoss, sequence_bce, smooth_labels


def _bce(logit: float, y: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_sequence_bce_by_hand():
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.5, -0.5, 3.0]])
    labels = torch.tensor([1.0, 0.0])
    # Sequence 0: label 1 at every step; sequence 1: label 0. Sum over time, mean over the batch.
    s0 = _bce(0.0, 1) + _bce(2.0, 1) + _bce(-1.0, 1)
    s1 = _bce(1.5, 0) + _bce(-0.5, 0) + _bce(3.0, 0)
    assert sequence_bce(logits, labels).item() == pytest.approx((s0 + s1) / 2, rel=1e-6)
    # log(2) per step at logit 0: 3 steps -> 3 log 2.
    assert sequence_bce(torch.zeros(4, 3), torch.tensor([0, 1, 1, 0])).item() == pytest.approx(3 * math.log(2))


def test_mask_ignores_padding():
    logits = torch.tensor([[0.5, -2.0, 9.0], [1.0, 1.0, 1.0]])
    labels = torch.tensor([0, 1])
    lengths = torch.tensor([2, 3])
    expected = ((_bce(0.5, 0) + _bce(-2.0, 0)) + 3 * _bce(1.0, 1)) / 2
    assert sequence_bce(logits, labels, lengths).item() == pytest.approx(expected, rel=1e-6)
    # Whatever the padded step holds does not matter, and gets no gradient.
    logits = logits.clone().requires_grad_(True)
    sequence_bce(logits, labels, lengths).backward()
    assert logits.grad[0, 2] == 0 and logits.grad[0, 0] != 0


def test_label_smoothing_by_hand():
    logits = torch.tensor([[2.0, -1.0]])
    eps = 0.1
    y = 1 * (1 - eps) + eps / 2  # 0.95
    expected = _bce(2.0, y) + _bce(-1.0, y)
    assert SequenceBCELoss(eps)(logits, torch.tensor([1.0])).item() == pytest.approx(expected, rel=1e-6)
    assert smooth_labels(torch.tensor([0.0, 1.0]), 0.01).tolist() == pytest.approx([0.005, 0.995])
    with pytest.raises(ValueError):
        SequenceBCELoss(1.0)


def test_shape_errors_and_dtype():
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        sequence_bce(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="labels"):
        sequence_bce(torch.zeros(2, 3), torch.zeros(3))
    # bf16 logits (autocast) are computed in float32.
    assert sequence_bce(torch.zeros(2, 3, dtype=torch.bfloat16), torch.ones(2)).dtype == torch.float32
