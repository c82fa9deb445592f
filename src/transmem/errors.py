"""The expected failures: bad user input or files. The CLI prints these as one line (exit 2)."""

from transmem.config import ConfigError
from transmem.data import DataError
from transmem.training.checkpoint import CheckpointError
from transmem.training.locks import LockedError
from transmem.training.rundir import RunConflictError
from transmem.transfer.builtin import BuiltinZooError
from transmem.transfer.memory_bank import MemoryBankError
from transmem.transfer.zoo import SourceError

EXPECTED_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    DataError,
    CheckpointError,
    SourceError,
    RunConflictError,
    MemoryBankError,
    LockedError,
    BuiltinZooError,
)
