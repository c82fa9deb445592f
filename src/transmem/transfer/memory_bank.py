"""The memory bank: the frozen sources' memory states on the target's training sequences.

For a batch, the bank gives, for every source n and chosen layer l, the cell memories
``C^{n,l}_t`` at every step: a tensor ``(B, T-1, c_n, h_n, w_n)``.

- :class:`LiveMemoryBank` runs the sources on exactly the frames the target read at each
  step (scheduled-sampling inputs, i.e. the *target's* predictions, included). A source's
  state at step t depends only on the inputs up to t, so running it after the target over
  the recorded inputs gives the same memories as running it in lockstep.
- :class:`RolloutMemoryBank` is the authors' release (thuml/transferable-memory,
  ``model_adaptive.py``): every source runs its *own* rollout over the training sequence with
  the target's scheduled-sampling mask. Where the mask says "true frame" it reads the true
  frame; elsewhere it reads its own previous prediction, never the target's.
- :class:`CachedMemoryBank` has the sources read the true frames. The bank is then a fixed
  function of the training sequence: it is computed once, stored as float16 memory-mapped
  arrays in a folder keyed by source weights, dataset fingerprint, layers and sequence
  length, and read by sequence index. A folder whose metadata or file sizes or checksums do
  not match is reported and rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from transmem.data.batch import TrainingBatch
from transmem.errors import DiskFullError, MemoryBankError
from transmem.progress import progress_bar
from transmem.storage.files import allocate_file, atomic_write_text, disk_full_error, remove_stale_temporaries, sha256_file
from transmem.storage.locks import FileLock
from transmem.transfer.zoo import Source

log = logging.getLogger(__name__)

CACHE_VERSION = 1
BUILD_LOCK = "build.lock"  # in the bank folder; held while the bank is built or checked


def source_memories(
    sources: list[Source], frames: Tensor, layers: list[int], mask: Tensor | None = None
) -> list[dict[int, Tensor]]:
    """Run every source over ``frames`` ``(B, T, C, H, W)``: reading them at every step
    (``mask`` None), or under the teacher ``mask`` ``(B, T-2)``, feeding back its own
    prediction where the mask is False.

    Returns one ``{layer: (B, T-1, c, h, w)}`` per source.
    """
    with torch.no_grad():
        return [source.model(frames, mask, record_layers=layers).memories for source in sources]


class LiveMemoryBank:
    """Sources recomputed every step on the target's own inputs."""

    needs_inputs = True

    def __init__(self, sources: list[Source], layers: list[int]) -> None:
        self.sources = sources
        self.layers = list(layers)

    def get(self, batch: TrainingBatch, inputs: Tensor) -> list[dict[int, Tensor]]:
        """``inputs``: the ``(B, T-1, C, H, W)`` frames the target read at steps 0..T-2."""
        # One padding frame makes a T-frame sequence whose T-1 steps read exactly ``inputs``.
        padded = torch.cat([inputs, inputs[:, -1:]], dim=1)
        return source_memories(self.sources, padded, self.layers)


class RolloutMemoryBank:
    """Each source runs its own rollout under the target's teacher mask (the authors' release)."""

    needs_inputs = False

    def __init__(self, sources: list[Source], layers: list[int]) -> None:
        self.sources = sources
        self.layers = list(layers)

    def get(self, batch: TrainingBatch, inputs: Tensor | None = None) -> list[dict[int, Tensor]]:
        """Memories of every source rolled out over ``batch.frames`` under ``batch.mask``."""
        return source_memories(self.sources, batch.frames, self.layers, batch.mask)


class CachedMemoryBank:
    """Sources' memories on the true training frames, computed once and memory-mapped.

    Args:
        sources: frozen sources.
        layers: memory layers to store.
        dataset: the finite training dataset (items ``(T, C, H, W)``), with ``fingerprint()``.
        folder: parent folder of caches; this cache lives in ``folder/<key>``.
    """

    needs_inputs = False

    def __init__(
        self,
        sources: list[Source],
        layers: list[int],
        dataset,
        folder: str | Path,
        batch_size: int = 16,
        device: str | torch.device = "cpu",
        progress: bool = True,
    ) -> None:
        if getattr(dataset, "online", False):
            raise MemoryBankError(
                "a cached memory bank needs a finite training set (set data.train_size > 0) or transfer.bank = 'live'"
            )
        self.sources = sources
        self.layers = list(layers)
        self.dataset = dataset
        self.size = len(dataset)
        self.key = self._key()
        self.folder = Path(folder) / self.key
        self.arrays: dict[tuple[int, int], np.memmap] = {}
        self.device = device
        # Two processes (parallel benchmark runs) may want the same bank: one builds it while
        # the other waits for the lock, then finds it valid.
        self.folder.mkdir(parents=True, exist_ok=True)
        with FileLock(self.folder / BUILD_LOCK):
            remove_stale_temporaries(self.folder)  # a writer killed here earlier (we hold the lock)
            if not self._valid():
                self._build(batch_size, progress)
        self._open()

    # ------------------------------------------------------------------ layout

    def _key(self) -> str:
        first = self.dataset[0]
        description = {
            "version": CACHE_VERSION,
            "sources": [s.digest for s in self.sources],
            "dataset": self.dataset.fingerprint(),
            "size": self.size,
            "layers": self.layers,
            "sequence": list(first.shape),
        }
        self._sequence_shape = tuple(first.shape)
        return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]

    def _shapes(self) -> dict[tuple[int, int], tuple[int, ...]]:
        steps = self._sequence_shape[0] - 1
        frame_size = self._sequence_shape[-1]
        shapes = {}
        for n, source in enumerate(self.sources):
            for layer in self.layers:
                channels, (h, w) = source.memory_layout(layer, frame_size)
                shapes[(n, layer)] = (self.size, steps, channels, h, w)
        return shapes

    def _file(self, n: int, layer: int) -> Path:
        return self.folder / f"source{n}_layer{layer}.f16"

    @property
    def nbytes(self) -> int:
        return sum(int(np.prod(shape)) * 2 for shape in self._shapes().values())

    # ------------------------------------------------------------------ validity

    def _valid(self) -> bool:
        meta_path = self.folder / "meta.json"
        if not meta_path.exists():
            return False
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError:
            log.warning("memory bank %s: meta.json is corrupted; rebuilding", self.folder)
            return False
        if meta.get("key") != self.key or not meta.get("complete"):
            log.warning("memory bank %s: stale or incomplete; rebuilding", self.folder)
            return False
        for (n, layer), shape in self._shapes().items():
            path = self._file(n, layer)
            expected = int(np.prod(shape)) * 2
            if not path.exists() or path.stat().st_size != expected:
                log.warning("memory bank %s: wrong size (corrupted cache); rebuilding", path)
                return False
            if meta.get("sha256", {}).get(path.name) != sha256_file(path):
                log.warning("memory bank %s: checksum mismatch (corrupted cache); rebuilding", path)
                return False
        return True

    # ------------------------------------------------------------------ build / read

    def _build(self, batch_size: int, progress: bool) -> None:
        meta_path = self.folder / "meta.json"
        atomic_write_text(meta_path, json.dumps({"key": self.key, "complete": False}))
        shapes = self._shapes()
        arrays = self._allocate(shapes)
        bar = progress_bar(self.size, 0, "memory bank", "seq", enabled=progress)
        for start in range(0, self.size, batch_size):
            stop = min(start + batch_size, self.size)
            frames = torch.stack([self.dataset[i] for i in range(start, stop)]).to(self.device)
            for n, memories in enumerate(source_memories(self.sources, frames, self.layers)):
                for layer, memory in memories.items():
                    if not torch.isfinite(memory).all():
                        raise MemoryBankError(f"source {self.sources[n].path}: non-finite memory on sequences {start}-{stop}")
                    arrays[(n, layer)][start:stop] = memory.to(torch.float16).cpu().numpy()
            bar.update(stop - start)
        bar.close()
        checksums = {}
        for key, array in arrays.items():
            array.flush()
            checksums[self._file(*key).name] = sha256_file(self._file(*key))
        atomic_write_text(meta_path, json.dumps({"key": self.key, "complete": True, "sha256": checksums}))
        log.info("memory bank built in %s (%.1f MB)", self.folder, self.nbytes / 1e6)

    def _allocate(self, shapes: dict[tuple[int, int], tuple[int, ...]]) -> dict[tuple[int, int], np.memmap]:
        """The bank's files, every block reserved on disk before it is mapped (a mapped page
        that finds the disk full would kill the process with SIGBUS), mapped for writing. A
        full disk removes them all and raises DiskFullError naming the bytes the bank needs
        (``meta.json`` still says incomplete: no later run trusts a partial bank)."""
        try:
            for key, shape in shapes.items():
                allocate_file(self._file(*key), int(np.prod(shape)) * 2)
        except DiskFullError:
            for key in shapes:
                self._file(*key).unlink(missing_ok=True)
            raise disk_full_error(self.folder, self.nbytes, "the cached memory bank (transfer.bank) of the sources") from None
        return {key: np.memmap(self._file(*key), np.float16, "r+", shape=shape) for key, shape in shapes.items()}

    def _open(self) -> None:
        self.arrays = {k: np.memmap(self._file(*k), np.float16, "r", shape=s) for k, s in self._shapes().items()}

    def get(self, batch: TrainingBatch, inputs: Tensor | None = None) -> list[dict[int, Tensor]]:
        """Memories of sequences ``batch.indices``: one ``{layer: (B, T-1, c, h, w)}`` per source."""
        order = np.asarray(batch.indices)
        out = []
        for n in range(len(self.sources)):
            out.append(
                {
                    layer: torch.from_numpy(np.ascontiguousarray(self.arrays[(n, layer)][order])).to(self.device, torch.float32)
                    for layer in self.layers
                }
            )
        return out
