"""The expected failures, at the bottom of the package: every module may raise them, and
this module imports nothing of transmem.

Every expected failure (bad user input, unusable files, a folder in use) is a
:class:`TransmemError`; the CLI prints its message as one line and exits with status 2
(:class:`TrainingDiverged`: 3). Each also derives from the built-in exception it replaces
(``ValueError`` for bad input, ``RuntimeError`` for a state of the machine), so code that
caught those keeps working. The modules where each is raised re-export it
(``transmem.config.ConfigError`` is this ``ConfigError``).
"""


class TransmemError(Exception):
    """An expected failure. The message is one line naming the input and the problem."""


class ConfigError(TransmemError, ValueError):
    """A configuration key or value is invalid. The message names the key."""


class DataError(TransmemError, ValueError):
    """A data file, folder or array is unusable. The message names it and the problem."""


class CheckpointError(TransmemError, ValueError):
    """A file is not a usable transmem checkpoint. The message names the file."""


class SourceError(TransmemError, ValueError):
    """A source cannot be used for this target. The message names the source."""


class BuiltinZooError(TransmemError, ValueError):
    """A builtin source is unknown, missing or damaged. The message names it."""


class RunConflictError(TransmemError, RuntimeError):
    """The output folder holds a run of a different configuration."""


class MemoryBankError(TransmemError, RuntimeError):
    """The memory bank cannot be built or read. The message names the file."""


class LockedError(TransmemError, RuntimeError):
    """Another process holds the lock."""


class DiskFullError(TransmemError, OSError):
    """A write found no space left on its disk (ENOSPC, or a quota). The message names the file
    and the bytes it needed; the writer left no partial file (built by
    :func:`transmem.storage.files.disk_full_error`, which also sets ``errno`` and ``filename``)."""

    def __str__(self) -> str:  # the message alone, not OSError's "[Errno 28] ...: 'path'"
        return str(self.args[0]) if self.args else "no space left on device"


class TrainingDiverged(TransmemError, RuntimeError):
    """The loss or the gradient norm became NaN or inf, or a value overflowed float32 (the
    optimiser's step with a huge ``train.lr``); the run folder keeps its last good checkpoint,
    if one was written (exit status 3). The message names the iteration as ``train.csv`` numbers
    it (1-based) and what to try.

    The divergence is recorded in the run folder's ``diverged.json``, so rerunning the same
    command with another ``train.lr`` (or ``train.grad_clip``), and nothing else changed,
    resumes from the kept checkpoint with the new value (:mod:`transmem.run.divergence`).
    Otherwise a lower ``train.lr`` is a new run: in a new ``--out``, or in the same one with
    ``--force`` (its files are renamed ``*.previous-<time>``, the checkpoints too); or start a
    new run from the kept weights: ``transfer.method = "finetune"``, ``transfer.sources =
    ["RUN/checkpoints/ckpt-N.pt"]`` (a backbone run; the optimiser, schedule and iteration
    count start afresh).

    ``iteration``: the iteration that diverged (1-based); ``kept``: the kept checkpoint's
    iteration (None: none was written); ``what``: the message without its advice (what
    diverged where, and the checkpoint kept), for a caller whose remedy differs (a benchmark's)."""

    def __init__(self, message: str, iteration: int | None = None, kept: int | None = None, what: str | None = None) -> None:
        super().__init__(message)
        self.iteration, self.kept, self.what = iteration, kept, what if what is not None else message


#: What the CLI reports as one line with exit status 2 (TrainingDiverged is caught first).
EXPECTED_ERRORS: tuple[type[Exception], ...] = (TransmemError,)
