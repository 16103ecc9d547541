"""deepfake: tell whether a video of a face is real or manipulated."""

__version__ = "0.1.0"
