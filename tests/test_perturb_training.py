"""DeeperForensics-1.0 distortions as a training augmentation: selectable in the training config and
applied with the same parameters to every frame of a sequence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from skimage import data as skdata

from deepfake.data import AugmentConfig, build_augment
from deepfake.perturb_augment import DeeperForensicsDistortion

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("mode", ["sing", "mix"])
def test_distortion_is_the_same_on_every_frame_of_a_sequence(mode):
    face = np.ascontiguousarray(skdata.astronaut()[40:200, 150:310])  # (160, 160, 3) real face
    frames = np.stack([face] * 6)
    pipeline = build_augment(AugmentConfig(strength=0.0, flip=False, perturb={"mode": mode, "p": 1.0}))
    changed = 0
    for seed in range(8):
        pipeline.set_random_seed(seed)
        out = pipeline(images=frames)["images"]
        out = np.asarray(out)
        assert out.shape == frames.shape and out.dtype == np.uint8
        for t in range(1, len(out)):
            np.testing.assert_array_equal(out[t], out[0])  # one draw of types, levels, blocks and noise per sequence
        changed += int(np.abs(out[0].astype(int) - face).mean() > 1.0)
    assert changed >= 6, "p=1 distortions should visibly change almost every sequence"


def test_training_config_selects_the_distortions():
    cfg = yaml.safe_load((ROOT / "configs" / "b1_lstm.yaml").read_text())
    assert "perturb" in cfg["data"]["augment"]  # the documented switch exists in the default config
    pipeline = build_augment(AugmentConfig(perturb={"mode": "sing", "levels": [2, 4], "p": 0.5}))
    found = [t for t in pipeline.transforms if isinstance(t, DeeperForensicsDistortion)]
    assert len(found) == 1
