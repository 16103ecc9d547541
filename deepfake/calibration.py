"""Calibration: a p(fake) that means what it says.

A detector's raw scores are sigmoids of logits that training pushed to be confident, not to be right on average.
A temperature T (and, where it measurably helps, a bias b), fitted on validation videos by log loss, maps each step's
logit l to sigmoid(l / T + b). It changes no ranking within a track's steps and, applied to every step, keeps the
scoring rule (`deepfake.scoring`) as it is. The fitted values travel in `detector.pt`'s meta as
``{"calibration": {"temperature": T, "bias": b, ...}}``; a checkpoint without them is used as it is.
"""

from __future__ import annotations

from typing import Any

__all__ = ["calibration_of", "apply_calibration"]


def calibration_of(meta: dict[str, Any]) -> tuple[float, float] | None:
    """(temperature, bias) recorded in a checkpoint's meta, or None (an uncalibrated checkpoint)."""
    cal = meta.get("calibration")
    if not isinstance(cal, dict) or cal.get("temperature") is None:
        return None
    temperature, bias = float(cal["temperature"]), float(cal.get("bias") or 0.0)
    if not temperature > 0:
        raise ValueError(f"checkpoint calibration temperature must be > 0, got {temperature}")
    return temperature, bias


def apply_calibration(logits, calibration: tuple[float, float] | None):
    """Logits (numpy or torch) mapped to calibrated logits, l / T + b; unchanged without a calibration."""
    if calibration is None:
        return logits
    temperature, bias = calibration
    return logits / temperature + bias
