"""The demo's stage runner: stages that run once and are reused by a later run with the same inputs, each with
its output in a log of its own (`output_to`), the state kept in OUT_DIR, and one line per training epoch on the
terminal while the fit stage's output goes to its log (`DemoProgress`). `deepfake.demo` holds the stages.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pytorch_lightning.callbacks import Callback

from data_prep.files import atomic_write
from deepfake.demo_report import DemoError, format_duration, format_value

__all__ = ["DemoFolderError", "DemoProgress", "StageRunner", "find_config", "log_tail", "output_to", "stage_key",
           "TERMINAL_FD"]

# The file descriptor of the terminal while a stage's output goes to its log (set by `output_to`), so that the
# fit stage can still print a line per epoch. An environment variable rather than a module global: the callback
# may live in a second copy of this module (`python -m deepfake.demo` imports it again by name).
TERMINAL_FD = "DEEPFAKE_DEMO_TERMINAL_FD"


class DemoFolderError(DemoError):
    """OUT_DIR can't be used (not a folder, or a folder of something else): a usage error."""


def find_config(name: str) -> Path:
    """A training config by path, or by name in the package's `configs/` (installed) or the repository's.

    Raises:
        DemoError: not found.
    """
    path = Path(name).expanduser()
    if path.is_file():
        return path
    here = Path(__file__).resolve().parent
    for folder in (here / "configs", here.parent / "configs", Path.cwd() / "configs"):
        if (folder / name).is_file():
            return folder / name
    raise DemoError(f"training config {name!r} not found (looked in {here / 'configs'}, {here.parent / 'configs'} "
                    f"and ./configs); pass --config PATH")


def stage_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """Everything written to stdout/stderr, by Python or by C code (FFmpeg, loggers bound to the real streams),
    goes to `log` while the block runs."""
    log.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved: list[int] = []
    with open(log, "a", encoding="utf-8", buffering=1) as f:
        try:
            for fd in (1, 2):
                try:
                    saved.append(os.dup(fd))
                    os.dup2(f.fileno(), fd)
                except OSError:  # no such descriptor (e.g. an embedding host): the Python-level redirect still works
                    saved.append(-1)
            if saved[0] >= 0:
                os.environ[TERMINAL_FD] = str(saved[0])
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.environ.pop(TERMINAL_FD, None)
            for fd, old in zip((1, 2), saved):
                if old >= 0:
                    os.dup2(old, fd)
                    os.close(old)


def log_tail(log: Path, n: int = 6) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return "\n".join("    " + line[:200] for line in lines[-n:])


class DemoProgress(Callback):
    """Prints one line per training epoch to the terminal while the fit stage's output goes to its log."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # after the epoch's validation in Lightning 2.x
        m = trainer.callback_metrics

        def get(name: str) -> float | None:
            value = m.get(name)
            return float(value) if value is not None else None

        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        line = (f"      epoch {trainer.current_epoch + 1:>2}/{total}: "
                f"train loss {format_value(get('train/loss_epoch'))}, val AUC {format_value(get('val/auc'))}, "
                f"val log loss {format_value(get('val/logloss'))} "
                f"[{format_duration(time.perf_counter() - self.start)}]")
        fd = os.environ.get(TERMINAL_FD)
        try:
            if fd:
                os.write(int(fd), (line + "\n").encode())
            else:
                print(line, flush=True)
        except (OSError, ValueError):  # a progress line must never stop training
            pass




class StageRunner:
    """Stage bookkeeping in OUT_DIR: which stages are done, with what inputs (`key`), and their logs.

    A subclass sets `state_file`, `state_version`, `owned` (everything it may write in OUT_DIR), `n_stages`, and
    has `out`, `config` (with `threads`), `say`, `state`, `report` and `upstream_changed`.
    """

    state_file = "state.json"
    state_version = 1
    owned: tuple[str, ...] = ()
    n_stages = 1

    def prepare_folder(self, fresh: bool) -> None:
        out = self.out
        if out.exists() and not out.is_dir():
            raise DemoFolderError(f"{out} exists and is not a folder")
        out.mkdir(parents=True, exist_ok=True)
        entries = [p.name for p in out.iterdir()]
        if entries and not (out / self.state_file).is_file():
            raise DemoFolderError(f"{out} is not empty and holds no earlier demo ({self.state_file}); choose a new or "
                                  "empty folder")
        if fresh:
            for name in self.owned:
                self.remove(out / name)

    @staticmethod
    def remove(path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()

    def read_state(self) -> dict:
        try:
            state = json.loads((self.out / self.state_file).read_text())
            if isinstance(state, dict) and state.get("version") == self.state_version:
                return state
        except (OSError, ValueError):
            pass
        return {"version": self.state_version, "stages": {}}

    def save_state(self) -> None:
        atomic_write(self.out / self.state_file, json.dumps(self.state, indent=2) + "\n")

    def stage(self, name: str, number: int, key: str, what: str, outputs: list[Path], folders: list[Path],
               run: Callable[[], dict]) -> dict:
        """Runs a stage unless an identical finished one can be reused; returns its recorded info."""
        done = self.state["stages"].get(name)
        header = f"[{number}/{self.n_stages}] {name:<10}"
        if (done and done.get("key") == key and not self.upstream_changed
                and all((self.out / p).exists() for p in done.get("outputs", []))):
            self.say(f"{header} {what}: reused from an earlier run ({format_duration(done['seconds'])} then)")
            self.report["stages"][name] = {**done, "reused": True}
            return done
        self.upstream_changed = True  # everything after a redone stage is redone too
        self.state["stages"].pop(name, None)
        self.save_state()
        for folder in folders:
            self.remove(folder)
        log = self.out / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.unlink(missing_ok=True)
        self.say(f"{header} {what} ...")
        start = time.perf_counter()
        info = run()
        seconds = time.perf_counter() - start
        outputs = [*outputs, *(self.out / info[k] for k in ("weights",) if info.get(k))]
        missing = [os.fspath(p) for p in outputs if not p.exists()]
        if missing:
            raise DemoError(f"stage {name} finished without writing {', '.join(missing)}; see {log}")
        # Paths relative to OUT_DIR: a moved or renamed demo folder is still reused.
        info = {**info, "key": key, "seconds": round(seconds, 2),
                "outputs": [p.relative_to(self.out).as_posix() for p in outputs],
                "log": log.relative_to(self.out).as_posix()}
        self.state["stages"][name] = info
        self.save_state()
        self.say(f"{' ' * len(header)} done in {format_duration(seconds)}")
        self.report["stages"][name] = {**info, "reused": False}
        return info

    def quiet(self, name: str, command: str, work: Callable[[], Any]) -> Any:
        """Runs a stage's library call in this process with its output in the stage's log, which starts with the
        command a user would type to do the same."""
        import torch

        log = self.out / "logs" / f"{name}.log"
        threads = torch.get_num_threads()
        with output_to(log):
            print(f"$ {command}", flush=True)
            try:
                if self.config.threads:
                    torch.set_num_threads(self.config.threads)
                return work()
            except Exception as err:  # noqa: BLE001 - reported with the log to read, not as a demo traceback
                import traceback

                sys.stdout.flush()
                before = log_tail(log)  # what the stage said, not the traceback below it
                traceback.print_exc()
                failure = f"{type(err).__name__}: {' '.join(str(err).split())}"
            finally:
                torch.set_num_threads(threads)
        raise DemoError(f"stage {name} failed ({failure}); its output is in {log}:\n{before}")
