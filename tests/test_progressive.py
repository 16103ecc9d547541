"""Progressive learning (deepfake/progressive.py): the schedule, and real CPU training that follows it."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from deepfake.progressive import ProgressiveLearning, Stage, interpolate, stage_of_epoch

ROOT = Path(__file__).resolve().parents[1]
EVAL_SIZE = 64


# ------------------------------------------------------------------------------------------------ schedule


def test_schedule_grows_linearly_and_ends_at_the_maxima():
    cb = ProgressiveLearning(stages=4, sizes=(0.5, None), magnitudes=(0.2, None), dropouts=(0.1, None))
    schedule = cb.build_schedule(eval_size=300, magnitude=1.0, dropout=0.3)
    # Sizes 150, 200, 250, 300 rounded to multiples of 8 except the last, which is exactly the evaluation size.
    assert [s.img_size for s in schedule] == [152, 200, 248, 300]
    assert [s.magnitude for s in schedule] == pytest.approx([0.2, 0.2 + 0.8 / 3, 0.2 + 1.6 / 3, 1.0])
    assert [s.dropout for s in schedule] == pytest.approx([0.1, 0.1 + 0.2 / 3, 0.1 + 0.4 / 3, 0.3])
    assert [s.index for s in schedule] == [0, 1, 2, 3]


def test_schedule_explicit_pixels_and_untouched_settings():
    cb = ProgressiveLearning(stages=3, sizes=(128, 300), magnitudes=None, dropouts=(0.1, 0.5), size_multiple=1)
    schedule = cb.build_schedule(eval_size=384, magnitude=None, dropout=0.0)
    assert [(s.index, s.img_size, s.magnitude) for s in schedule] == [(0, 128, None), (1, 214, None), (2, 300, None)]
    assert [s.dropout for s in schedule] == pytest.approx([0.1, 0.3, 0.5])
    assert isinstance(schedule[0], Stage)
    single = ProgressiveLearning(stages=1, sizes=(0.5, None)).build_schedule(224, 1.0, 0.2)
    assert [(s.img_size, s.magnitude, s.dropout) for s in single] == [(224, 1.0, 0.2)]  # one stage: the maxima
    assert interpolate(2.0, 4.0, 1, 3) == 3.0


def test_every_stage_gets_epochs_and_training_ends_in_the_last():
    for stages, epochs in itertools.product(range(1, 9), range(1, 31)):
        if stages > epochs:
            continue
        seq = [stage_of_epoch(e, stages, max_epochs=epochs) for e in range(epochs)]
        assert seq[0] == 0 and seq[-1] == stages - 1
        assert all(b - a in (0, 1) for a, b in zip(seq, seq[1:])), seq  # grows, one stage at a time
        assert set(seq) == set(range(stages))
    assert [stage_of_epoch(e, 4, max_epochs=10) for e in range(10)] == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    assert [stage_of_epoch(e, 3, epochs_per_stage=2) for e in range(8)] == [0, 0, 1, 1, 2, 2, 2, 2]
    with pytest.raises(ValueError, match="max_epochs or epochs_per_stage"):
        stage_of_epoch(0, 4)


@pytest.mark.parametrize("kwargs, message", [
    ({"stages": 0}, "stages must be"),
    ({"sizes": (0.5,)}, "pair"),
    ({"sizes": (8, None)}, "neither a share"),
    ({"sizes": (100.5, None)}, "neither a share"),
    ({"magnitudes": (0.1, 3.0)}, r"\[0, 2\]"),
    ({"dropouts": (0.1, 1.0)}, r"\[0, 1\)"),
    ({"epochs_per_stage": 0}, "epochs_per_stage"),
    ({"sizes": None, "magnitudes": None, "dropouts": None}, "changes nothing"),
])
def test_bad_settings_are_refused_with_a_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ProgressiveLearning(**kwargs)


def test_shrinking_ranges_are_refused():
    with pytest.raises(ValueError, match="sizes must grow"):
        ProgressiveLearning(sizes=(400, None)).build_schedule(300, 1.0, 0.2)
    with pytest.raises(ValueError, match="dropouts must grow"):
        ProgressiveLearning(dropouts=(0.3, None)).build_schedule(300, 1.0, 0.0)
    with pytest.raises(ValueError, match="evaluation size"):
        ProgressiveLearning().build_schedule(None, 1.0, 0.2)


# ------------------------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory) -> Path:
    """An index.csv of 8 one-track videos (6 train, 2 val), 6 crops each at 64 px; fakes carry a bright patch."""
    root = tmp_path_factory.mktemp("progressive_index")
    rng = np.random.default_rng(0)
    rows = ["video,label,split,original,track,frame,x1,y1,x2,y2,score,crop"]
    for v in range(8):
        label, split = v % 2, "val" if v >= 6 else "train"
        video = f"{'fake' if label else 'real'}/clip_{v}.mp4"
        for f in range(6):
            img = rng.integers(60, 120, size=(EVAL_SIZE, EVAL_SIZE, 3), dtype=np.uint8)
            if label:
                img[20:44, 20:44] = 230
            crop = f"crops/clip_{v}/t0_f{f:06d}.jpg"
            (root / crop).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / crop), img)
            rows.append(f"{video},{label},{split},{video},0,{f * 5},0,0,10,10,0.99,{crop}")
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    return root


def _probe_callback():
    """Records, per training epoch, the crop side of the training batches, the augmentation strength and the dropout
    the backbone applies, and the sides of all validation batches."""
    import pytorch_lightning as pl

    class _Probe(pl.Callback):
        def __init__(self) -> None:
            self.train_sizes: dict[int, set[int]] = {}
            self.val_sizes: set[int] = set()
            self.magnitude: dict[int, float] = {}
            self.dropout: dict[int, float] = {}

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            e = trainer.current_epoch
            self.train_sizes.setdefault(e, set()).add(int(batch["frames"].shape[-1]))
            self.magnitude[e] = trainer.datamodule.augment.strength
            self.dropout[e] = pl_module.net.backbone.drop_rate

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            self.val_sizes.add(int(batch["frames"].shape[-1]))

    return _Probe()


def _counting_datamodule(index: Path):
    from deepfake.data import AugmentConfig, FaceSequenceDataModule

    class Counting(FaceSequenceDataModule):
        builds = 0

        def train_dataloader(self):
            type(self).builds += 1
            return super().train_dataloader()

    return Counting(str(index), seq_len=4, batch_size=2, num_workers=0, persistent_workers=False, epoch_size=4,
                    augment=AugmentConfig(strength=1.0))


def _fit(index: Path, callbacks, max_epochs: int, ckpt_dir: Path | None = None, ckpt_path: str | None = None):
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from deepfake.lit import DeepfakeLitModule
    from deepfake.model import DetectorConfig

    pl.seed_everything(0, workers=True)
    lit = DeepfakeLitModule(DetectorConfig(backbone="test_efficientnet", pretrained=False, img_size=EVAL_SIZE,
                                           drop_rate=0.2, lstm_hidden=16), lr=1e-3)
    dm = _counting_datamodule(index)
    extra = [ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0)] if ckpt_dir else []
    trainer = pl.Trainer(accelerator="cpu", max_epochs=max_epochs, logger=False, enable_checkpointing=bool(ckpt_dir),
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_train_batches=2, limit_val_batches=1, callbacks=[*callbacks, *extra])
    trainer.fit(lit, datamodule=dm, ckpt_path=ckpt_path)
    return trainer, lit, dm


def test_training_follows_the_schedule_and_evaluates_at_full_size(tiny_index, recwarn):
    cb = ProgressiveLearning(stages=3, sizes=(0.5, None), magnitudes=(0.0, None), dropouts=(0.0, None))
    probe = _probe_callback()
    trainer, lit, dm = _fit(tiny_index, [cb, probe], max_epochs=4)
    # 4 epochs in 3 stages: epochs 0-1 stage 0, epoch 2 stage 1, epoch 3 stage 2 (the maxima of the config).
    assert [h["stage"] for h in cb.history] == [0, 0, 1, 2]
    assert probe.train_sizes == {0: {32}, 1: {32}, 2: {48}, 3: {64}}
    assert probe.magnitude == pytest.approx({0: 0.0, 1: 0.0, 2: 0.5, 3: 1.0})
    assert probe.dropout == pytest.approx({0: 0.0, 1: 0.0, 2: 0.1, 3: 0.2})
    assert [h["img_size"] for h in cb.history] == [32, 32, 48, 64]
    assert probe.val_sizes == {EVAL_SIZE}  # evaluation never changes size
    assert type(dm).builds == 3  # the training loader is rebuilt once per stage, not every epoch
    assert trainer.reload_dataloaders_every_n_epochs == 0  # the user's setting is back
    assert lit.detector_meta()["img_size"] == EVAL_SIZE  # the checkpoint records the evaluation size
    assert trainer.callback_metrics["progressive/img_size"] == 64
    assert not [w for w in recwarn if "ProgressiveLearning" in str(w.message)]


def test_resumed_training_continues_at_the_right_stage(tiny_index, tmp_path, recwarn):
    first = ProgressiveLearning(stages=3, sizes=(0.5, None), magnitudes=None, dropouts=None, epochs_per_stage=1)
    _fit(tiny_index, [first], max_epochs=2, ckpt_dir=tmp_path)
    assert [h["img_size"] for h in first.history] == [32, 48]
    resumed = ProgressiveLearning(stages=3, sizes=(0.5, None), magnitudes=None, dropouts=None, epochs_per_stage=1)
    probe = _probe_callback()
    _fit(tiny_index, [resumed, probe], max_epochs=4, ckpt_path=str(tmp_path / "last.ckpt"))
    assert probe.train_sizes == {2: {64}, 3: {64}}
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]  # restored history + the new epochs
    assert not [w for w in recwarn if "ProgressiveLearning" in str(w.message)]


def test_cli_config_selects_progressive_learning(tiny_index, tmp_path, capsys, recwarn):
    from deepfake.cli import train

    status = train.main(["fit", "--config", str(ROOT / "configs/tiny_cpu.yaml"),
                         "--config", str(ROOT / "configs/backbones/progressive.yaml"),
                         "--data.index", str(tiny_index), "--data.seq_len", "4", "--data.batch_size", "2",
                         "--data.epoch_size", "2", "--trainer.max_epochs", "2", "--trainer.limit_val_batches", "1",
                         "--trainer.enable_progress_bar", "false",
                         "--run_dir", str(tmp_path), "--run_name", "prog"])
    assert status == 0, capsys.readouterr().err
    run = tmp_path / "prog" / "version_0"
    assert "deepfake.progressive.ProgressiveLearning" in (run / "config.yaml").read_text()
    metrics = (run / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    sizes = [float(row.split(",")[header.index("progressive/img_size")]) for row in metrics[1:]
             if row.split(",")[header.index("progressive/img_size")]]
    assert sizes == [32.0, 64.0]  # 2 epochs, 2 stages: half of tiny_cpu's 64 px, then 64
    assert not [w for w in recwarn if "trains at" in str(w.message)]
