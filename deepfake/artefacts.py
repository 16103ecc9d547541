"""What a prediction can leave beside its score: the plot of its scores over time (`deepfake.plots.plot_video`) and
its explanations (`deepfake.explain.write_explanation`), made after the score and never at its cost: a plot or an
explanation that fails is a note, and the prediction stands. `deepfake predict --plot/--explain`, `deepfake serve`
and the demo all write them through `write_artefacts`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Artefacts", "write_artefacts"]


@dataclass
class Artefacts:
    """What `write_artefacts` wrote.

    Attributes:
        plot: the plot's path, or None (not asked, not made, or the video was an error).
        explanations: the explanation files written (track PNGs, heatmaps.npz, the annotated video).
        notes: one line per artefact that could not be made, saying why (``no plot: ...``, ``no explanation: ...``).
    """

    plot: Path | None = None
    explanations: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _one_line(err: Exception) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def write_artefacts(result: dict, faces, detector, *, plot: str | os.PathLike | None = None,
                    explain: str | os.PathLike | None = None, explain_video: bool = False,
                    margin: float | None = None, threshold: float = 0.5,
                    stage: Callable[[str], None] | None = None) -> Artefacts:
    """Plot and explain one scored video.

    Args:
        result: its predict result (`deepfake.inference.Prediction.result`).
        faces: its `VideoFaces` (`Prediction.faces`), or None when it gave none.
        detector: the `Detector` that scored it (explanations need its PyTorch model).
        plot: the PNG to write, or None for no plot. Not drawn for a video that could not be read.
        explain: the folder of its explanations, or None. Made only for a video that was scored.
        explain_video: with `explain`, also the annotated video (explained.mp4).
        margin: the crops' margin (the extractor's), to place the heat in the video.
        threshold: the verdict threshold the pictures mark.
        stage: called with "plotting" / "explaining" before each (progress for a server).

    Returns:
        What was written, and a note for what could not be.
    """
    out = Artefacts()
    if plot is not None and result.get("status") != "error":
        if stage:
            stage("plotting")
        try:
            from deepfake.plots import plot_video

            plot_video(result, faces, Path(plot), threshold=threshold)
            out.plot = Path(plot)
        except Exception as err:  # noqa: BLE001 - a plot must not cost the prediction
            out.notes.append(f"no plot: {_one_line(err)}")
    if explain is not None and result.get("status") == "ok":
        if stage:
            stage("explaining")
        try:
            from deepfake.explain import write_explanation

            out.explanations = write_explanation(faces, detector, explain, video=explain_video, margin=margin,
                                                 threshold=threshold)
        except Exception as err:  # noqa: BLE001 - an explanation must not cost the prediction
            out.notes.append(f"no explanation: {_one_line(err)}")
    return out
