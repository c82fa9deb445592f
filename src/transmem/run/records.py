"""What a run writes while and after it trains: ``train.csv`` and ``val.csv``, TensorBoard
scalars, checkpoints and the model file.

:class:`RunRecorder` is the training loop's recorder (:class:`~transmem.training.loop.LoopRecorder`),
rank 0's alone. The logs are append-only; on resume, rows past the resumed iteration (work
lost to a kill) are dropped, and a line torn by a kill is skipped.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from torch import Tensor

from transmem.config import ConfigError
from transmem.run.resume import save_training_checkpoint
from transmem.storage.files import DISK_FULL_ERRNOS, atomic_write_text, disk_full_error
from transmem.storage.model_file import save_model
from transmem.storage.run_folder import RunFolder
from transmem.training.loop import LOG_FIELDS, VALIDATION_METRICS
from transmem.training.setup import TrainingState


def read_rows(path: Path, below: int) -> list[dict]:
    """Complete rows of a CSV log with iteration < ``below``; a line torn by a kill is dropped."""
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if None in row or None in row.values():  # too few or too many fields: torn line
                continue
            try:
                if int(row["iteration"]) < below:
                    rows.append(row)
            except (KeyError, ValueError):
                continue
    return rows


def rewrite_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    """Replace the CSV log at ``path`` with ``rows`` (atomically)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


class CsvLog:
    """Append-only CSV; on resume, rows past the resumed iteration (lost work) are dropped."""

    def __init__(self, path: Path, fields: list[str], resume_iteration: int) -> None:
        self.path, self.fields = path, fields
        rewrite_csv(path, fields, read_rows(path, resume_iteration + 1))

    def write(self, row: dict) -> None:
        """Append ``row``; a write that fails (a full disk) truncates the log back to its last
        whole row, so no torn row is left, and raises (DiskFullError for a full disk)."""
        text = io.StringIO()
        csv.DictWriter(text, fieldnames=self.fields, extrasaction="ignore").writerow(row)
        data = memoryview(text.getvalue().encode())
        with open(self.path, "ab", buffering=0) as handle:
            end = handle.seek(0, io.SEEK_END)
            try:
                while data:
                    data = data[handle.write(data) :]
            except OSError as error:
                handle.truncate(end)
                if error.errno in DISK_FULL_ERRNOS:
                    raise disk_full_error(self.path, len(text.getvalue().encode())) from None
                raise


def tensorboard_writer_class():
    """torch's ``SummaryWriter``; a ConfigError without the tensorboard package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("train.tensorboard = true needs the tensorboard package (pip install transmem[tensorboard])") from None
    return SummaryWriter


class RunRecorder:
    """Rank 0's records of one run resumed at (or started from) iteration ``start``: opening
    it drops ``train.csv``'s rows past ``start`` and, with ``train.tensorboard``, opens the
    TensorBoard log."""

    def __init__(self, state: TrainingState, start: int) -> None:
        self.state = state
        self.folder = RunFolder(state.run_dir)
        self.train_log = CsvLog(self.folder.train_log, LOG_FIELDS, start)
        self.writer = tensorboard_writer_class()(log_dir=str(self.folder.tensorboard)) if state.config.train.tensorboard else None

    def log_step(self, iteration: int, row: dict, terms: dict[str, Tensor]) -> None:
        """A row of ``train.csv`` (and the loss terms as TensorBoard scalars)."""
        self.train_log.write(row)
        if self.writer is not None:
            for key, value in terms.items():
                self.writer.add_scalar(f"loss/{key}", value.item(), iteration)

    def log_validation(self, iteration: int, means: dict[str, float]) -> None:
        """A row of ``val.csv``; rows at or past ``iteration`` come from work lost to a kill: replaced."""
        path = self.folder.val_log
        rows = read_rows(path, iteration) + [{"iteration": iteration, **{k: f"{v:.6g}" for k, v in means.items()}}]
        rewrite_csv(path, ["iteration", *VALIDATION_METRICS], rows)

    def save_checkpoint(self, iteration: int) -> None:
        save_training_checkpoint(self.state, iteration)

    def save_model(self, metadata: dict) -> None:
        """The model file of the weights the run keeps, ``metadata`` in its header."""
        save_model(self.state.model, self.state.config, self.folder.model, metadata)
