"""Benchmarks: the transfer benchmark and ``transmem speed``.

- :mod:`~transmem.benchmark.suites` and :mod:`~transmem.benchmark.runner`: suites of sources
  and target methods, run with one budget (``transmem benchmark``).
- :mod:`~transmem.benchmark.speed` (with ``speed_config``, ``flops``, ``workload`` and
  ``peak_memory``): training-step and inference speed, memory and efficiency
  (``transmem speed``).

Nothing is imported here, so that ``transmem speed``'s parser and its peak-memory processes
do not load the runner (torch, matplotlib) before they need it.
"""
