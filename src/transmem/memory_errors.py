"""Recognising failed allocations: PyTorch's CPU allocator raises a plain ``RuntimeError``
("can't allocate memory: you tried to allocate N bytes"), CUDA an ``OutOfMemoryError``
("Tried to allocate 2.00 GiB"), numpy a ``MemoryError`` ("Unable to allocate 4.00 EiB")."""

from __future__ import annotations

import re


def is_out_of_memory(error: BaseException) -> bool:
    """True if ``error`` is a failed allocation on the host or a device."""
    return isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(error)


def allocation_size(error: BaseException) -> str:
    """The size the failed allocation asked for, e.g. ``"3.0 GiB"``, or ``""`` if not stated."""
    text = str(error)
    in_bytes = re.search(r"allocate (\d+) bytes", text)
    if in_bytes:
        return f"{int(in_bytes.group(1)) / 2**30:,.1f} GiB"
    stated = re.search(r"allocate ([\d.]+ ?[KMGTPE]i?B)", text)
    return stated.group(1) if stated else ""
