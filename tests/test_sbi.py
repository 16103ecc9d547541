"""Self-blended images: only the face region changes, seeded, temporally consistent, any frame shape."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from data_prep.sbi import BlendParams, blend_region, sample_blend_params, self_blend
from data_prep.synth import face_photos


@pytest.fixture(scope="module")
def astronaut():
    return face_photos()[0]


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return d if d.ndim == 2 else d.max(-1)


@pytest.mark.parametrize("seed", range(5))
def test_only_the_face_region_changes(astronaut, seed):
    params = sample_blend_params(np.random.default_rng(seed))
    fake = self_blend(astronaut.image, astronaut.box, params, landmarks=astronaut.landmarks)
    assert fake.shape == astronaut.image.shape and fake.dtype == np.uint8
    d = changed(fake, astronaut.image)
    x0, y0, x1, y1 = blend_region(astronaut.image.shape, astronaut.box)
    outside = d.copy()
    outside[y0:y1, x0:x1] = 0
    assert outside.max() == 0, "pixels outside blend_region changed"
    bx1, by1, bx2, by2 = astronaut.box.astype(int)
    assert d[by1:by2, bx1:bx2].mean() > 3, "the face barely changed"
    # The change is centred on the face: the weighted centre of |fake - real| lies inside the box.
    ys, xs = np.nonzero(d)
    cx, cy = np.average(xs, weights=d[ys, xs]), np.average(ys, weights=d[ys, xs])
    assert bx1 < cx < bx2 and by1 < cy < by2


def test_params_are_seeded_and_varied():
    a = sample_blend_params(np.random.default_rng(7))
    assert a == sample_blend_params(np.random.default_rng(7))
    others = {sample_blend_params(np.random.default_rng(s)) for s in range(20)}
    assert len(others) == 20
    assert len({p.blend_ratio for p in others}) > 1 and len({p.resize for p in others}) > 1
    assert sample_blend_params(np.random.default_rng(1), drift=False).drift == 0.0


def test_mask_is_soft_and_peaks_at_the_blend_ratio(astronaut):
    params = dataclasses.replace(sample_blend_params(np.random.default_rng(3)), blend_ratio=0.75, drift=0.0)
    fake, mask = self_blend(astronaut.image, astronaut.box, params, return_mask=True)
    assert mask.shape == astronaut.image.shape[:2] and mask.dtype == np.float32
    assert mask.min() >= 0 and mask.max() == pytest.approx(0.75, abs=0.01)
    soft = ((mask > 0.05) & (mask < 0.7)).sum()
    assert soft > 0.1 * (mask > 0.05).sum(), "the mask edge is not soft"
    assert changed(fake, astronaut.image)[mask == 0].max() == 0


def test_fake_moves_with_the_face(astronaut):
    """Fixed parameters + a translated face -> the same fake, translated (temporal consistency)."""
    params = dataclasses.replace(sample_blend_params(np.random.default_rng(4)), drift=0.0)
    image = astronaut.image
    dx, dy = 13, 7
    moved = np.zeros_like(image)
    moved[dy:, dx:] = image[:-dy, :-dx]
    shift = np.array([dx, dy, dx, dy])
    fake = self_blend(image, astronaut.box, params, landmarks=astronaut.landmarks)
    fake_moved = self_blend(moved, astronaut.box + shift, params, landmarks=astronaut.landmarks + [dx, dy])
    x0, y0, x1, y1 = blend_region(image.shape, astronaut.box)
    np.testing.assert_array_equal(fake_moved[y0 + dy:y1 + dy, x0 + dx:x1 + dx], fake[y0:y1, x0:x1])


def test_drift_is_mild(astronaut):
    params = dataclasses.replace(sample_blend_params(np.random.default_rng(5)), drift=0.1)
    f0 = self_blend(astronaut.image, astronaut.box, params, frame_index=0).astype(np.int16)
    f1 = self_blend(astronaut.image, astronaut.box, params, frame_index=1).astype(np.int16)
    f40 = self_blend(astronaut.image, astronaut.box, params, frame_index=40).astype(np.int16)
    blend = np.abs(f0 - astronaut.image).mean()
    assert np.abs(f1 - f0).mean() < 0.1 * blend, "consecutive frames must be almost the same fake"
    assert np.abs(f40 - f0).mean() > 0, "drift > 0 must change the fake over time"


@pytest.mark.parametrize("shape", [(240, 320), (240, 320, 1), (240, 320, 3), (320, 180, 3)])
def test_any_frame_shape_and_faces_at_the_edge(shape):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, shape, dtype=np.uint8)
    params = sample_blend_params(rng)
    h, w = shape[:2]
    for box in ([40, 40, 100, 120], [-20, -30, 40, 50], [w - 40, h - 50, w + 20, h + 30]):
        fake = self_blend(frame, box, params)
        assert fake.shape == frame.shape and fake.dtype == np.uint8
        assert changed(fake, frame).max() > 0
    # A box entirely outside the frame changes nothing.
    np.testing.assert_array_equal(self_blend(frame, [w + 10, h + 10, w + 50, h + 60], params), frame)


def test_invalid_params_and_frames_are_refused():
    with pytest.raises(ValueError, match="blend_ratio"):
        BlendParams(blend_ratio=1.5)
    with pytest.raises(ValueError, match="resize"):
        BlendParams(resize=0.0)
    with pytest.raises(ValueError, match="uint8"):
        self_blend(np.zeros((10, 10, 3), np.float32), [1, 1, 8, 8], BlendParams())
