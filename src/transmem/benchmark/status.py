"""``transmem benchmark --status``: where each run of a benchmark stands, reading only."""

from __future__ import annotations

from transmem.benchmark.planning import plan_benchmark
from transmem.benchmark.request import BenchmarkRequest
from transmem.benchmark.scheduler import is_complete
from transmem.run.conflicts import RunConflictError, check_run_dir
from transmem.storage.checkpoints import checkpoint_iteration, list_checkpoints
from transmem.storage.locks import FileLock
from transmem.storage.run_folder import CHECKPOINT_DIR, CONFIG_FILE, MODEL_FILE, RUN_LOCK


def benchmark_status(request: BenchmarkRequest) -> list[dict]:
    """Where each run of a benchmark stands, without training or writing anything.

    One ``{"run", "run_dir", "state"}`` per run, sources first; ``state`` is ``finished``,
    ``trained, not evaluated``, ``at iteration N of M`` (its newest checkpoint), ``not
    started``, or ``holds another config``; `` (training now, pid P)`` is appended while a
    process holds the run's lock.
    """
    tasks = plan_benchmark(request, preflight=False, count_flops=request.budget == "flops").tasks  # reads only
    rows = []
    for task in tasks:
        try:
            check_run_dir(task.config, task.run_dir)
        except RunConflictError:
            state = "holds another config" if (task.run_dir / CONFIG_FILE).exists() else f"holds run files but no {CONFIG_FILE}"
        else:
            if is_complete(task.run_dir):
                state = "finished"
            elif (task.run_dir / MODEL_FILE).exists():
                state = "trained, not evaluated"
            elif checkpoints := list_checkpoints(task.run_dir / CHECKPOINT_DIR):
                state = f"at iteration {checkpoint_iteration(checkpoints[-1])} of {task.config.train.iterations}"
            else:
                state = "not started"
        holder = FileLock(task.run_dir / RUN_LOCK).holder()
        if holder is not None:
            state += f" (training now, pid {holder})"
        rows.append({"run": task.name, "run_dir": str(task.run_dir), "state": state})
    return rows
