"""Compound scaling (deepfake/scaling.py) against the paper's formula and against what timm really builds.

Big models are built on the meta device only: shapes and parameter counts without memory or compute.
"""

from __future__ import annotations

import math

import pytest
import timm
import torch
from timm.layers import make_divisible
from torch.utils.flop_counter import FlopCounterMode

from deepfake.scaling import (
    ALPHA,
    BETA,
    EFFICIENTNET_RELEASED,
    GAMMA,
    compound_scaling,
    expected_variant,
    fit_phi,
    flops_multiplier,
    input_size_for,
    timm_multipliers,
)

VARIANTS = range(8)
# What holds for the released B1..B7 at their fitted phi (see the table in deepfake/scaling.py): the worst
# deviation is 7.4% (B7's depth); 8% leaves rounding room and still fails for phi = N itself (19%).
FORMULA_TOLERANCE = 0.08


def _meta(name: str) -> torch.nn.Module:
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, num_classes=0).eval()


@pytest.fixture(scope="module")
def family() -> dict[int, torch.nn.Module]:
    return {i: _meta(f"tf_efficientnet_b{i}") for i in VARIANTS}


def test_compound_scaling_formula():
    assert compound_scaling(0) == (1.0, 1.0, 1.0)
    d, w, r = compound_scaling(2.0)
    assert (d, w, r) == pytest.approx((1.44, 1.21, 1.3225))
    # The paper's constraint alpha * beta^2 * gamma^2 ~ 2 (1.92 exactly): FLOPs about double per unit of phi.
    assert ALPHA * BETA ** 2 * GAMMA ** 2 == pytest.approx(1.92027)
    assert flops_multiplier(1.0) == pytest.approx(1.92027)
    assert flops_multiplier(3.0) == pytest.approx(d * w ** 2 * r ** 2 * flops_multiplier(1.0))
    assert expected_variant(1.0).resolution == round(224 * 1.15)
    assert compound_scaling(1.0, alpha=2.0, beta=1.0, gamma=1.0) == (2.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="must be >= 1"):
        compound_scaling(1.0, alpha=0.9)
    # fit_phi inverts the formula exactly where the formula holds.
    for phi in (0.0, 0.5, 3.0, 7.0):
        v = expected_variant(phi)
        assert fit_phi(v.depth, v.width, 224 * compound_scaling(phi)[2]) == pytest.approx(phi)


def test_released_multipliers_are_timms():
    """The table in scaling.py is what timm's source builds (width, depth) and what its configs say (resolution)."""
    for i in VARIANTS:
        width, depth, resolution, _ = EFFICIENTNET_RELEASED[i]
        assert timm_multipliers(f"tf_efficientnet_b{i}") == (width, depth)
        assert timm_multipliers(f"efficientnet_b{i}") == (width, depth)  # timm's own B-variants share them
        assert input_size_for(f"tf_efficientnet_b{i}") == resolution
    assert [EFFICIENTNET_RELEASED[i][0] for i in VARIANTS] == [1.0, 1.0, 1.1, 1.2, 1.4, 1.6, 1.8, 2.0]
    assert [EFFICIENTNET_RELEASED[i][1] for i in VARIANTS] == [1.0, 1.1, 1.2, 1.4, 1.8, 2.2, 2.6, 3.1]
    with pytest.raises(ValueError, match="not a model of timm.models.efficientnet"):
        timm_multipliers("resnet50")


def test_released_variants_follow_the_formula_at_a_fitted_phi():
    phis = []
    for i in VARIANTS:
        width, depth, resolution, _ = EFFICIENTNET_RELEASED[i]
        phi = fit_phi(depth, width, resolution)
        phis.append(phi)
        expected = expected_variant(phi)
        for name, got, want in (("depth", depth, expected.depth), ("width", width, expected.width),
                                ("resolution", resolution, 224 * compound_scaling(phi)[2])):
            assert abs(got / want - 1) <= FORMULA_TOLERANCE, (i, name, got, want)
    assert phis[0] == 0.0
    assert all(b > a for a, b in zip(phis, phis[1:])), phis  # each variant is a step up in phi
    # And honestly: phi = N (the variant's number) does NOT reproduce the released multipliers within that tolerance.
    misses = [i for i in VARIANTS if any(
        abs(got / want - 1) > FORMULA_TOLERANCE
        for got, want in zip(EFFICIENTNET_RELEASED[i][:2], compound_scaling(i)[1::-1]))]
    assert misses == [1, 2, 3, 4, 5, 6, 7]


def test_timm_builds_the_multipliers_within_its_rounding(family):
    """Block counts are ceil(B0's * depth) per stage, channels make_divisible(B0's * width, 8)."""
    b0 = family[0]
    b0_blocks = [len(stage) for stage in b0.blocks]
    b0_channels = [b0.conv_stem.out_channels, *(stage[-1].conv_pwl.out_channels for stage in b0.blocks[1:]),
                   b0.num_features]
    assert b0_blocks == [1, 2, 2, 3, 3, 4, 1]
    for i in VARIANTS:
        width, depth, _, _ = EFFICIENTNET_RELEASED[i]
        model = family[i]
        assert [len(stage) for stage in model.blocks] == [math.ceil(n * depth) for n in b0_blocks]
        channels = [model.conv_stem.out_channels, *(s[-1].conv_pwl.out_channels for s in model.blocks[1:]),
                    model.num_features]
        assert channels == [make_divisible(c * width, 8) for c in b0_channels]


def test_size_parameters_and_flops_grow_with_phi(family):
    params, gmacs = [], []
    for i in VARIANTS:
        model = family[i]
        res = EFFICIENTNET_RELEASED[i][2]
        params.append(sum(p.numel() for p in model.parameters()) / 1e6)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(torch.empty(1, 3, res, res, device="meta"))
        gmacs.append(counter.get_total_flops() / 2e9)
    assert all(b > a for a, b in zip(params, params[1:])), params
    assert all(b > a for a, b in zip(gmacs, gmacs[1:])), gmacs
    # Against timm's published figures (benchmark-infer CSV, with the 1000-class head: +1.28M..2.56M params).
    assert params[0] == pytest.approx(4.01, abs=0.01) and params[7] == pytest.approx(63.79, abs=0.01)
    assert gmacs[0] == pytest.approx(0.40, rel=0.05) and gmacs[7] == pytest.approx(38.33, rel=0.05)
    # FLOPs grow as depth x width^2 x resolution^2 (the paper's FLOPS ~ d w^2 r^2), with timm's real block counts.
    blocks = [sum(len(s) for s in family[i].blocks) for i in VARIANTS]
    for i in VARIANTS:
        width, _, res, _ = EFFICIENTNET_RELEASED[i]
        predicted = gmacs[0] * (blocks[i] / blocks[0]) * width ** 2 * (res / 224) ** 2
        assert gmacs[i] == pytest.approx(predicted, rel=0.15), (i, gmacs[i], predicted)
