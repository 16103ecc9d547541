"""deepfake: tell whether a video of a face is real or manipulated."""

import os

# albumentations checks PyPI for a newer version on import; a detector run must not touch the network.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
