"""Transfer between predictive networks: source zoo, memory bank and transfer methods."""

from transmem.data.batch import TrainingBatch
from transmem.transfer.memory_bank import CachedMemoryBank, LiveMemoryBank, MemoryBankError, RolloutMemoryBank
from transmem.transfer.methods import METHODS, distillation_loss
from transmem.transfer.zoo import Source, SourceError, describe_zoo, load_source, load_zoo

__all__ = [
    "METHODS",
    "CachedMemoryBank",
    "LiveMemoryBank",
    "MemoryBankError",
    "RolloutMemoryBank",
    "Source",
    "SourceError",
    "TrainingBatch",
    "describe_zoo",
    "distillation_loss",
    "load_source",
    "load_zoo",
]
