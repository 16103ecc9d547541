"""Start-up: commands import only what their path needs, and MTCNN runs without facenet-pytorch or torchvision
(`data_prep.mtcnn_nets`) with the boxes it gave with them. A whole `deepfake predict` on an exported model in a fresh
process, without timm, torchvision or facenet-pytorch, is tests/test_export.py's."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from data_prep import mtcnn, mtcnn_nets, nms
from data_prep.mtcnn import MTCNNCascade


def test_help_imports_no_torch():
    done = subprocess.run([sys.executable, "-c", "import sys\nfrom deepfake.cli import main\n"
                           "for c in ('predict', 'export', 'evaluate'):\n    main([c, '--help'])\n"
                           "print('torch' in sys.modules)"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "False", done.stderr[-2000:]


def test_nms_is_torchvisions_to_the_index():
    from torchvision.ops import batched_nms

    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        n = int(torch.randint(0, 1200 if trial % 40 == 0 else 60, (1,), generator=g))  # both torchvision strategies
        xy = torch.rand(n, 2, generator=g) * 200
        boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 60 + 1], 1)
        if trial % 3 == 0:
            boxes = boxes.round()  # integer boxes: many IoUs fall exactly on a threshold
        scores = torch.rand(n, generator=g)
        if trial % 4 == 0 and n * 4 <= 4000:
            # Ties: the order among equal scores must match too (above 4000 coordinates torchvision orders the kept
            # boxes with torch's unstable sort, whose order among ties is arbitrary).
            scores = (scores * 5).round() / 5
        owner = torch.randint(0, 3, (n,), generator=g)
        threshold = (0.5, 0.7, 0.3, 0.6)[trial % 4]
        assert np.array_equal(nms.batched_nms(boxes.numpy(), scores.numpy(), owner.numpy(), threshold),
                              batched_nms(boxes, scores, owner, threshold).numpy()), trial


def test_nets_are_facenet_pytorchs():
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    for ours, theirs, side in zip(mtcnn_nets.load_nets(), (PNet(), RNet(), ONet()), (37, 24, 48)):
        x = torch.randn(3, 3, side, side)
        with torch.inference_mode():
            assert all(torch.equal(a, b) for a, b in zip(ours(x), theirs.eval()(x)))


@pytest.mark.parametrize("opencv", [True, False], ids=["opencv", "batched-torch"])
def test_boxes_are_those_of_facenet_pytorch_and_torchvision(hopper, opencv, monkeypatch, one_torch_thread):
    """The cascade with our nets and suppression gives bit for bit the boxes it gave with facenet-pytorch's nets
    and torchvision's suppression, one frame and a batch (frames apart by the suppression's index)."""
    import cv2
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
    from torchvision.ops import batched_nms

    two = np.hstack([hopper, cv2.flip(hopper, 1)])[::2, ::2].copy()  # two faces, 512 x 300
    frames = np.stack([two, np.roll(two, 37, axis=1)])
    ours = MTCNNCascade(min_face_size=20)
    ours.opencv_resampling = opencv
    got = ours.detect(frames)

    def torchvisions(boxes, scores, owner, threshold):
        return batched_nms(*(torch.from_numpy(np.asarray(a)) for a in (boxes, scores, owner)), threshold).numpy()

    monkeypatch.setattr(mtcnn, "batched_nms", torchvisions)
    theirs = MTCNNCascade(min_face_size=20)
    theirs.nets.pnet_, theirs.nets.rnet_, theirs.nets.onet_ = (net.to(memory_format=torch.channels_last).eval()
                                                               for net in (PNet(), RNet(), ONet()))
    theirs.opencv_resampling = opencv
    want = theirs.detect(frames)
    assert sum(len(w[0]) for w in want) >= 4  # both faces in both frames
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            assert np.array_equal(a, b)
