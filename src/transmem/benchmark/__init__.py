"""The transfer benchmark (``transmem benchmark``).

- :mod:`~transmem.benchmark.suites` and :mod:`~transmem.benchmark.runner`: suites of sources
  and target methods, run with one budget.
- :mod:`~transmem.benchmark.estimate`: how long the training left will take, its steps timed
  with :mod:`transmem.speed`'s workloads (``transmem speed`` is a package of its own).

Nothing is imported here, so that importing one module loads only what it needs.
"""
