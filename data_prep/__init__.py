"""Offline data preparation: videos -> face crops + index (and the demo-data generator)."""
