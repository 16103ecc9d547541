"""The training loss: binary cross-entropy at every time step against the clip's label, summed over time.

DeeperForensics-1.0 trains its ResNet + LSTM baseline this way: every step of the sequence predicts the clip's
label, so the LSTM learns to be right early and to sharpen as it sees more frames, while the score used at
inference is the last step. For a batch (B, T) of logits and (B,) labels:

    loss = mean over b of  sum over valid t of  BCE(logit[b, t], target[b])

Padded steps (t >= length[b]) are masked out, so a track shorter than T still trains on the steps it has.

`chance_loss` is the same loss for the best guess that ignores the frames (one constant p(fake), the batch's share
of fakes): a training loss that ends near it means the run learned nothing (`learned_nothing`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["smooth_labels", "sequence_bce", "SequenceBCELoss", "chance_loss", "learned_nothing",
           "STALLED_RATIO"]

# A run whose last training epoch ends at this share of `chance_loss` or above has learned nothing: on the
# generalization suite stalled runs ended at 0.99-1.00, runs that learned at 0.5-0.9 (docs/training.md).
STALLED_RATIO = 0.95


def smooth_labels(labels: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Binary label smoothing: y (1 - eps) + eps / 2, so eps = 0.01 turns 0/1 targets into 0.005/0.995."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    return labels * (1.0 - label_smoothing) + 0.5 * label_smoothing


def sequence_bce(logits: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor | None = None,
                 label_smoothing: float = 0.0) -> torch.Tensor:
    """Sum over valid time steps of BCE(logit_t, label), averaged over the batch.

    Args:
        logits: (B, T) one logit per step.
        labels: (B,) clip labels, 1 fake and 0 real (float or int).
        lengths: (B,) number of valid steps per sequence (steps at t >= length are padding); None: all valid.
        label_smoothing: eps of `smooth_labels`.

    Returns:
        A scalar float32 tensor.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (B, T), got {tuple(logits.shape)}")
    b, t = logits.shape
    if labels.shape != (b,):
        raise ValueError(f"labels must have shape ({b},), got {tuple(labels.shape)}")
    target = smooth_labels(labels.to(device=logits.device, dtype=torch.float32), label_smoothing)
    per_step = F.binary_cross_entropy_with_logits(logits.float(), target[:, None].expand(b, t), reduction="none")
    if lengths is not None:
        steps = torch.arange(t, device=logits.device)
        per_step = per_step * (steps[None, :] < lengths.to(logits.device)[:, None])
    return per_step.sum(dim=1).mean()


def chance_loss(labels: torch.Tensor, lengths: torch.Tensor | None, steps: int, label_smoothing: float = 0.0
                ) -> torch.Tensor:
    """`sequence_bce` of the best constant guess for this batch: the mean number of valid steps times the binary
    entropy (nats) of the batch's mean target (ln 2 per step when half the batch is fake).

    Args:
        labels: (B,) clip labels, 1 fake and 0 real.
        lengths: (B,) valid steps per sequence; None: `steps` each.
        steps: T, the sequences' padded length.
        label_smoothing: eps of `smooth_labels`, as the loss it is compared with.
    """
    q = smooth_labels(labels.float(), label_smoothing).mean().clamp(1e-7, 1 - 1e-7)
    entropy = -(q * q.log() + (1 - q) * (1 - q).log())
    n = lengths.float().clamp(max=steps).mean() if lengths is not None else torch.tensor(float(steps))
    return (n.to(entropy.device) * entropy).float()


def learned_nothing(loss: float, chance: float) -> bool:
    """True when a training loss is at least `STALLED_RATIO` of the chance loss it is compared with."""
    return chance > 0 and loss >= STALLED_RATIO * chance


class SequenceBCELoss(nn.Module):
    """`sequence_bce` as a module, with its label smoothing fixed.

    Args:
        label_smoothing: eps of `smooth_labels` (the DFDC winners used about 0.01).
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        smooth_labels(torch.zeros(1), label_smoothing)  # validates
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """See `sequence_bce`."""
        return sequence_bce(logits, labels, lengths, self.label_smoothing)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}"
