"""The batched MTCNN cascade (data_prep.mtcnn) against facenet-pytorch's MTCNN and known face boxes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from data_prep.mtcnn import MTCNNCascade
from data_prep.resample import onet_inputs
from data_prep.track import iou_matrix

# Face boxes (x1, y1, x2, y2) in the photos as shipped, measured with MTCNN at full resolution.
ASTRONAUT_FACE = np.array([181, 62, 268, 172], np.float32)  # skimage.data.astronaut(), 512 x 512
HOPPER_FACE = np.array([174, 120, 356, 340], np.float32)  # matplotlib's grace_hopper.jpg, 512 wide x 600 high


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _paste(canvas: tuple[int, int], photo: np.ndarray, face: np.ndarray, height: int, x: int, y: int,
           frame: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The photo scaled to `height` and pasted at (x, y) on a gradient (cut at the frame's edges); its face box."""
    h, w = canvas
    if frame is None:
        frame = np.dstack([np.tile(np.linspace(40, 200, w, dtype=np.uint8), (h, 1)),
                           np.tile(np.linspace(200, 60, h, dtype=np.uint8)[:, None], (1, w)),
                           np.full((h, w), 120, np.uint8)])
    s = height / photo.shape[0]
    image = cv2.resize(photo, (round(photo.shape[1] * s), height), interpolation=cv2.INTER_AREA)
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + image.shape[1], w), min(y + image.shape[0], h)
    frame[y0:y1, x0:x1] = image[y0 - y:y1 - y, x0 - x:x1 - x]
    return frame, face * s + np.array([x, y, x, y], np.float32)


@pytest.fixture(scope="module")
def scenes(hopper) -> list[tuple[np.ndarray, np.ndarray]]:
    """640x360 frames (the detector's usual input size) with faces of several sizes and places, and their boxes."""
    astro = skdata.astronaut()
    out = []
    for height, x, y in [(360, 140, 0), (240, 300, 60), (150, 40, 200), (100, 500, 30)]:
        frame, box = _paste((360, 640), astro, ASTRONAUT_FACE, height, x, y)
        out.append((frame, box[None]))
    frame, a = _paste((360, 640), astro, ASTRONAUT_FACE, 300, -60, 30)
    frame, b = _paste((360, 640), hopper, HOPPER_FACE, 300, 380, 30, frame)
    out.append((frame, np.stack([a, b])))  # two faces
    return out


@pytest.fixture(scope="module")
def cascade() -> MTCNNCascade:
    return MTCNNCascade(min_face_size=20, factor=0.709, device="cpu")


@pytest.fixture(scope="module")
def reference():
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, min_face_size=20, factor=0.709, post_process=False, device="cpu")


def _match(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Best IoU of each true box with a found one."""
    if len(found) == 0:
        return np.zeros(len(truth))
    return iou_matrix(truth, found).max(axis=1)


def test_finds_the_faces_facenet_pytorch_finds_as_tightly(scenes, cascade, reference):
    ours_iou, ref_iou = [], []
    for frame, truth in scenes:
        (boxes, probs, points), = cascade.detect(frame)
        ref_boxes, ref_probs = reference.detect(frame)
        assert boxes.dtype == np.float32 and boxes.shape == (len(truth), 4) and probs.shape == (len(truth),)
        assert len(ref_boxes) == len(truth)
        assert (probs > 0.99).all() and (np.diff(probs) <= 0).all()  # most probable first
        assert (_match(boxes, ref_boxes) > 0.75).all()  # the same faces as facenet-pytorch
        ours_iou += list(_match(boxes, truth))
        # O-Net's five landmarks, mapped as facenet-pytorch maps them: the same points within a few % of the face.
        _, _, ref_points = reference.detect(frame, landmarks=True)
        assert points.shape == (len(truth), 5, 2) and points.dtype == np.float32
        for box, p in zip(boxes, points):
            j = int(np.argmax(iou_matrix(box[None], ref_boxes)[0]))
            side = box[2] - box[0]
            assert np.linalg.norm(p - np.asarray(ref_points[j], np.float32), axis=1).max() < 0.06 * side
            assert ((p[:, 0] > box[0]) & (p[:, 0] < box[2]) & (p[:, 1] > box[1]) & (p[:, 1] < box[3])).all()
            assert p[:2, 1].max() < p[2, 1] < p[3:, 1].min()  # eyes above the nose above the mouth
        ref_iou += list(_match(ref_boxes, truth))
    # As close to the true boxes as facenet-pytorch's, face by face and on average.
    assert min(ours_iou) > 0.7 and np.mean(ours_iou) >= np.mean(ref_iou) - 0.02


def test_full_size_photos_match_facenet_pytorch(cascade, reference, hopper):
    for image, face in [(skdata.astronaut(), ASTRONAUT_FACE), (hopper, HOPPER_FACE)]:
        (boxes, probs, _), = cascade.detect(image)
        ref_boxes, _ = reference.detect(image)
        assert len(boxes) == 1 and probs[0] > 0.99
        assert iou_matrix(boxes, ref_boxes)[0, 0] > 0.85 and iou_matrix(boxes, face[None])[0, 0] > 0.85


def test_a_batch_gives_what_frames_one_at_a_time_give(scenes, cascade):
    frames = np.stack([f for f, _ in scenes])
    batched = cascade.detect(frames)
    assert len(batched) == len(frames)
    for frame, (boxes, probs, _) in zip(frames, batched):
        (one_boxes, one_probs, _), = cascade.detect(frame)
        np.testing.assert_allclose(boxes, one_boxes, atol=1e-3)
        np.testing.assert_allclose(probs, one_probs, atol=1e-5)


def test_batched_torch_resampling_finds_the_same_faces(scenes, cascade):
    """The GPU code path (pyramid by torch interpolation, candidates by one roi_align per stage), run on the CPU."""
    gpu_style = MTCNNCascade(min_face_size=20, factor=0.709, device="cpu")
    gpu_style.opencv_resampling = False
    frames = np.stack([f for f, _ in scenes])
    for (frame, truth), (boxes, probs, _), (cpu_boxes, _, _) in zip(scenes, gpu_style.detect(frames),
                                                              cascade.detect(frames)):
        assert len(boxes) == len(truth) and (probs > 0.99).all()
        assert (_match(boxes, truth) > 0.7).all() and (_match(boxes, cpu_boxes) > 0.75).all()


def test_no_face_gives_empty_arrays(cascade):
    coffee = cv2.resize(skdata.coffee(), (640, 360), interpolation=cv2.INTER_AREA)
    flat = np.full((360, 640, 3), 128, np.uint8)
    for boxes, probs, _ in cascade.detect(np.stack([coffee, flat])):
        assert boxes.shape == (0, 4) and boxes.dtype == np.float32 and probs.shape == (0,)
    assert cascade.detect(np.zeros((0, 360, 640, 3), np.uint8)) == []


def test_a_face_cut_by_the_frame_edge_is_found(cascade):
    frame, truth = _paste((360, 640), skdata.astronaut(), ASTRONAUT_FACE, 360, -140, 0)  # a fifth of it outside
    assert truth[0] < 0 < truth[2]
    (boxes, probs, _), = cascade.detect(frame)
    assert len(boxes) >= 1 and probs[0] > 0.9
    assert _match(boxes[:1], truth[None])[0] > 0.5


def test_refine_keeps_detected_boxes_and_corrects_shifted_ones(scenes, cascade):
    frames = np.stack([f for f, _ in scenes])
    detected = [d.boxes for d in cascade.detect(frames)]
    kept = cascade.refine(frames, detected)
    rng = np.random.default_rng(0)
    shifted = []
    for boxes in detected:
        wh = np.tile(boxes[:, 2:] - boxes[:, :2], 2)
        shifted.append(boxes + rng.uniform(-0.2, 0.2, boxes.shape).astype(np.float32) * wh)
    corrected = cascade.refine(frames, shifted)
    for (frame, truth), boxes, moved, (k_boxes, k_probs, _), (c_boxes, c_probs, _) in zip(
            scenes, detected, shifted, kept, corrected):
        assert k_boxes.shape == boxes.shape and k_probs.shape == (len(boxes),)  # one answer per box, in order
        assert (k_probs > 0.95).all() and (np.diag(iou_matrix(k_boxes, boxes)) > 0.75).all()
        assert (c_probs > 0.9).all()
        # O-Net pulls a shifted box back onto the face.
        assert iou_matrix(c_boxes, truth).max(axis=1).mean() > iou_matrix(moved, truth).max(axis=1).mean()


def test_refine_says_when_no_face_is_left(scenes, cascade):
    frame, truth = scenes[2]  # a face at the left; the right of the frame is background
    away = truth + np.array([400, -150, 400, -150], np.float32)
    (_, probs, _), = cascade.refine(frame[None], [away])
    assert probs[0] < 0.5
    assert cascade.refine(frame[None], [np.zeros((0, 4), np.float32)])[0][0].shape == (0, 4)
    assert cascade.refine(frame[:0][None][:0], []) == []


def _shifted(detected: list[np.ndarray]) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [b + rng.uniform(-0.15, 0.15, b.shape).astype(np.float32) * np.tile(b[:, 2:] - b[:, :2], 2)
            for b in detected]


def test_refine_from_inputs_made_without_torch_is_refine(scenes, cascade):
    """A worker without torch makes O-Net's inputs (`onet_inputs`); O-Net on them gives what `refine` gives."""
    frames = np.stack([f for f, _ in scenes])
    boxes = _shifted([d.boxes for d in cascade.detect(frames)])
    boxes[0] = np.concatenate([boxes[0], [[-40, -30, 50, 60]]]).astype(np.float32)  # past the frame's corner
    squares, crops = onet_inputs(frames, boxes)
    counts = [len(b) for b in boxes]
    assert squares.shape == (sum(counts), 4) and crops.shape == (sum(counts), 48, 48, 3) and crops.dtype == np.uint8
    assert np.allclose(squares[:, 2] - squares[:, 0], squares[:, 3] - squares[:, 1])  # squared
    assert crops[-1 - sum(counts[1:]), :10, :10].max() == 0  # zeros outside the frame
    direct, prepared = cascade.refine(frames, boxes), cascade.refine_inputs(squares, crops, counts)
    for (b1, p1, _), (b2, p2, _) in zip(direct, prepared):
        assert np.array_equal(b1, b2) and np.array_equal(p1, p2)
    # The cascade's batched torch resampling (a GPU's, for detection) is not used to re-fit: one process gives what
    # workers that prepare O-Net's inputs give.
    batched = MTCNNCascade(min_face_size=20, factor=0.709, device="cpu")
    batched.opencv_resampling = False
    for (b1, p1, _), (b2, p2, _) in zip(batched.refine(frames, boxes), prepared):
        assert np.array_equal(b1, b2) and np.array_equal(p1, p2)
    assert cascade.refine_inputs(*onet_inputs(frames[:1], [np.zeros((0, 4))]), [0])[0][0].shape == (0, 4)
    with pytest.raises(ValueError, match="counts summing"):
        cascade.refine_inputs(squares, crops, counts[:-1])
    with pytest.raises(ValueError, match="box lists for"):
        onet_inputs(frames, boxes[:-1])


def test_bad_input_is_refused_with_a_reason(cascade):
    with pytest.raises(ValueError, match="uint8 RGB"):
        cascade.detect(np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError, match="box lists for"):
        cascade.refine(np.zeros((2, 32, 32, 3), np.uint8), [np.zeros((1, 4))])


@pytest.mark.gpu
def test_on_a_gpu_the_same_faces_are_found(scenes, cascade):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    gpu = MTCNNCascade(min_face_size=20, factor=0.709, device="cuda")
    frames = np.stack([f for f, _ in scenes])
    for (frame, truth), (boxes, probs, _), (cpu_boxes, _, _) in zip(scenes, gpu.detect(frames), cascade.detect(frames)):
        assert len(boxes) == len(truth) and (probs > 0.99).all()
        assert (_match(boxes, truth) > 0.7).all() and (_match(boxes, cpu_boxes) > 0.75).all()
    detected = [d.boxes for d in gpu.detect(frames)]
    for boxes, (refit, probs, _) in zip(detected, gpu.refine(frames, detected)):
        assert refit.shape == boxes.shape and (probs > 0.95).all()
    prepared = gpu.refine_inputs(*onet_inputs(frames, detected), [len(b) for b in detected])  # made on the CPU
    for boxes, (refit, probs, _) in zip(detected, prepared):
        assert (probs > 0.95).all() and (np.diag(iou_matrix(refit, boxes)) > 0.75).all()
