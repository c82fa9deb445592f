"""Run a benchmark's trainings, one after another or on several worker processes.

A :class:`Task` is one run (a source or a target: train, then evaluate on the test set) and
the names of the tasks it needs finished first (a finetuned target needs its source; TMU,
distillation and Knowledge Flow need every source; scratch needs none).

``jobs = 1`` runs the tasks in order in this process. ``jobs = N > 1`` runs up to N at once,
each in its own worker process with ``threads`` torch threads: small recurrent networks use
several cores better as several single-threaded runs than as one multi-threaded run. A task
starts as soon as a worker is free and its needs are done: tasks that others need first,
then the costliest (:attr:`Task.cost`), so that the last long run does not end alone. Runs never share
a folder, and a memory bank that two runs need is built once under a lock
(:mod:`transmem.storage.locks`).

Each task runs in a fresh worker process, which sends back only its error or log line; the
metrics are read from the run folder. Tasks finished by an earlier benchmark are read here,
without a worker. If one task fails (or its worker dies), the running
ones are stopped (they resume from their last checkpoint next time) and the error is
raised. On Linux, workers stop with this process however it ends (even by ``kill -9``).

On a machine with several CUDA devices each worker whose run trains on ``auto`` or ``cuda``
gets the GPU with the fewest running workers (``CUDA_VISIBLE_DEVICES`` set in the worker
before CUDA starts, so the run's config, and with it resuming, is the same on any GPU).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path

import torch

from transmem.config import RunConfig
from transmem.data import DataError
from transmem.evaluation.evaluate import evaluate_run, read_metrics
from transmem.progress import format_seconds
from transmem.run.conflicts import check_run_dir
from transmem.run.lifecycle import train
from transmem.storage.checkpoints import checkpoint_iteration, list_checkpoints
from transmem.storage.run_folder import CHECKPOINT_DIR, MODEL_FILE, RunFolder


@dataclass
class Task:
    name: str  # e.g. "source balls", "tmu seed 0"
    config: RunConfig
    run_dir: Path
    needs: tuple[str, ...] = field(default=())  # names of tasks that must finish first
    cost: float = 1.0  # relative training cost (any unit): with several workers the costliest ready task starts first


def is_complete(run_dir: Path) -> bool:
    """Trained and scored on its test set (a damaged or non-test ``metrics.json`` is scored again)."""
    return (run_dir / MODEL_FILE).exists() and test_metrics(run_dir) is not None


def test_metrics(run_dir: Path) -> dict | None:
    """A run's test metrics of its final weights (its ``metrics.json``), else None."""
    metrics = read_metrics(RunFolder(run_dir).metrics("test"), "test")
    return metrics if metrics is not None and metrics.get("finished") is True else None  # not a checkpoint's scores


def train_and_evaluate(config: RunConfig, run_dir: Path, progress: bool = False) -> str:
    """Train (or resume) and evaluate one run; return a line for the log.

    A folder holding a run of another config is refused (:class:`RunConflictError`), even
    a finished one: results are never taken from a run the benchmark did not ask for.
    A run whose test split turns out empty (a short data file) gets no metrics
    (:func:`test_metrics` gives None).
    """
    check_run_dir(config, run_dir)
    if is_complete(run_dir):
        return f"{run_dir}: finished earlier"
    started = time.perf_counter()
    if not (run_dir / MODEL_FILE).exists():  # trained but not (validly) evaluated: only evaluate
        train(config, run_dir, progress=progress)
    try:
        evaluate_run(run_dir)
    except DataError as error:
        return f"{run_dir}: no test metrics ({error})"
    return f"{run_dir}: done in {time.perf_counter() - started:.0f} s"


def run_tasks(
    tasks: list[Task], jobs: int = 1, threads: int | None = None, progress: bool = True, log=print
) -> dict[str, dict | None]:
    """Run every task; return ``{task name: test metrics or None}``.

    ``threads``: torch threads per worker when ``jobs > 1`` (default: this process's
    threads divided by ``jobs``, at least 1).
    """
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be unique: {names}")
    for task in tasks:
        unknown = [n for n in task.needs if n not in names[: names.index(task.name)]]
        if unknown:
            raise ValueError(f"task {task.name!r} needs {unknown}, which are not earlier tasks")
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    if jobs == 1:
        results, estimate = {}, TimeLeft(len(tasks))
        for k, task in enumerate(tasks, 1):
            iterations = [remaining_iterations(t) for t in tasks[k - 1 :]]
            work = [remaining_work(t, n) for t, n in zip(tasks[k - 1 :], iterations)]
            log(estimate.line(k, task.name, sum(iterations), sum(work)))
            started = time.monotonic()
            line = train_and_evaluate(task.config, task.run_dir, progress)
            estimate.record(work[0], time.monotonic() - started)
            results[task.name] = test_metrics(task.run_dir)
            log(f"  {line}")
        return results
    threads = threads or threads_per_run(jobs)
    return _run_parallel(tasks, jobs, threads, log)


def remaining_iterations(task: Task) -> int:
    """Training iterations ``task`` still has to run: 0 once trained, else counted from its
    newest checkpoint's name (nothing is loaded)."""
    if (task.run_dir / MODEL_FILE).exists():
        return 0
    checkpoints = list_checkpoints(task.run_dir / CHECKPOINT_DIR)
    return max(0, task.config.train.iterations - (checkpoint_iteration(checkpoints[-1]) if checkpoints else 0))


class TimeLeft:
    """``run k of n`` lines with the time left, estimated from the runs trained so far in this
    session (evaluation and memory banks included) in seconds per unit of :func:`remaining_work`,
    so that a wide run (fusion) trained first does not make the narrow ones look as slow."""

    def __init__(self, runs: int, jobs: int = 1) -> None:
        self.runs, self.jobs = runs, jobs
        self.seconds, self.work = 0.0, 0.0

    def record(self, work: float, seconds: float) -> None:
        """A run finished: it did ``work`` (:func:`remaining_work` when it started) in ``seconds``
        (runs trained earlier: no work, ignored)."""
        if work > 0:
            self.seconds += seconds
            self.work += work

    def line(self, k: int, name: str, iterations_left: int, work_left: float) -> str:
        """The log line of run ``k`` starting, ``iterations_left`` iterations (``work_left``
        units of work) to train from it on."""
        left = self.time_left(iterations_left, work_left)
        return f"run {k} of {self.runs}: {name}" + (f" ({left})" if left else "")

    def time_left(self, iterations_left: int, work_left: float) -> str:
        """``"about 3.5 min left for 400 iterations"``; ``""`` when nothing is left."""
        if iterations_left == 0:
            return ""
        if not self.work:
            return f"{iterations_left} iterations to train from here; time left estimated after the first run"
        return f"about {format_seconds(self.seconds / self.work * work_left / self.jobs)} left for {iterations_left} iterations"


def remaining_work(task: Task, iterations: int | None = None) -> float:
    """What is left of ``task`` in units of :attr:`Task.cost`: its remaining iterations
    (``iterations``, else :func:`remaining_iterations`) times its cost per iteration (the
    scheduler's estimate of how wide the run is)."""
    left = remaining_iterations(task) if iterations is None else iterations
    return left * task.cost / max(1, task.config.train.iterations)


def threads_per_run(jobs: int) -> int:
    """Torch threads each run gets when ``jobs`` run at once: this process's threads split evenly.

    On CPU the thread count changes the order of floating-point sums, so a run trained with
    another count gives other (equally valid) weights.
    """
    return torch.get_num_threads() if jobs <= 1 else max(1, torch.get_num_threads() // jobs)


def _longest_first(ready: list[Task], pending: list[Task]) -> list[Task]:
    """The order in which ready tasks start: those that pending tasks need first (sources),
    then the costliest (so that no long run is left alone at the end), ties in list order."""
    needed = {name for task in pending for name in task.needs}
    return sorted(ready, key=lambda task: (task.name not in needed, -task.cost))


def gpu_count() -> int:
    """CUDA devices this process sees (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def gpu_for(task: Task, busy: list[int], count: int) -> int | None:
    """The GPU (an index among this process's visible ones) for ``task``'s worker: the one with
    the fewest running workers (``busy``: their GPUs), lowest index on ties; None with fewer
    than two GPUs or a run whose ``train.device`` is not ``auto`` or ``cuda``."""
    if count < 2 or task.config.train.device not in ("auto", "cuda"):
        return None
    return min(range(count), key=lambda gpu: (busy.count(gpu), gpu))


def visible_devices(gpu: int, visible: str | None) -> str:
    """``CUDA_VISIBLE_DEVICES`` for a worker on ``gpu``, an index among the parent's
    ``visible`` devices (its ``CUDA_VISIBLE_DEVICES``, None: every device)."""
    if not visible:
        return str(gpu)
    return [entry.strip() for entry in visible.split(",")][gpu]


def _run_parallel(tasks: list[Task], jobs: int, threads: int, log) -> dict[str, dict | None]:
    context = multiprocessing.get_context("spawn")  # fork is unsafe with torch's thread pools
    gpus = gpu_count()
    placed: dict[str, int | None] = {}  # task name -> its worker's GPU
    results: dict[str, dict | None] = {}
    pending = list(tasks)
    running: dict[int, tuple[Task, multiprocessing.process.BaseProcess, Connection]] = {}  # by sentinel
    estimate, started, counted = TimeLeft(len(tasks), jobs), {}, {}
    log(f"{len(tasks)} run{'' if len(tasks) == 1 else 's'} on {jobs} worker processes, {threads} torch thread(s) each")
    try:
        while pending or running:
            _take_finished(pending, results, log)
            ready = [t for t in pending if all(n in results for n in t.needs)]
            for task in _longest_first(ready, pending)[: jobs - len(running)]:
                pending.remove(task)
                receiver, sender = context.Pipe(duplex=False)
                gpu = gpu_for(task, [placed[t.name] for t, _, _ in running.values()], gpus)
                placed[task.name] = gpu
                devices = None if gpu is None else visible_devices(gpu, os.environ.get("CUDA_VISIBLE_DEVICES"))
                worker = context.Process(
                    target=_work,
                    args=(task.config, task.run_dir, threads, os.getpid(), sender, devices),
                    name=task.name,
                    daemon=True,
                )
                worker.start()
                sender.close()
                running[worker.sentinel] = (task, worker, receiver)
                iterations = remaining_iterations(task)
                counted[task.name] = (iterations, remaining_work(task, iterations))
                started[task.name] = time.monotonic()
                waiting = [remaining_iterations(t) for t in pending]
                left_now = [(n, remaining_work(t, n)) for t, n in zip(pending, waiting)]
                left_now += [counted[t.name] for t, _, _ in running.values()]
                left = estimate.time_left(sum(i for i, _ in left_now), sum(w for _, w in left_now))
                where = "" if gpu is None else f" on GPU {devices}"
                log(f"start {task.name}{where} (run {len(results) + len(running)} of {len(tasks)}{'; ' + left if left else ''})")
            for sentinel in wait(list(running)) if running else []:  # one or more workers ended
                task, worker, receiver = running.pop(sentinel)
                line = _worker_line(task, worker, receiver, [t.name for t, _, _ in running.values()], log)
                results[task.name] = test_metrics(task.run_dir)
                estimate.record(counted[task.name][1], time.monotonic() - started[task.name])
                log(f"done {task.name} ({line})")
    finally:  # an error, Ctrl-C: no worker outlives the benchmark
        for _, worker, _ in running.values():
            worker.terminate()
            worker.join()
    return results


def _worker_line(task: Task, worker, receiver: Connection, still_running: list[str], log) -> str:
    """The log line of a worker that ended; its error (or its death without a result) is
    raised, after saying which runs are stopped with it."""
    worker.join()
    try:
        error, line = receiver.recv()
    except EOFError:  # the worker died before sending anything
        error, line = None, None
    receiver.close()
    if line is None and error is None:
        error = RuntimeError(
            f"{task.name}: its worker process ended with exit code {worker.exitcode} and no result "
            f"(killed, or out of memory?); rerun the benchmark to resume it"
        )
    if error is not None:
        if still_running:
            log(f"{task.name} failed; stopping {', '.join(still_running)} (they resume from their last checkpoint)")
        raise error
    return line


def _take_finished(pending: list[Task], results: dict[str, dict | None], log) -> None:
    """Record the ready tasks finished by an earlier benchmark here, without starting a worker.

    One pass in list order suffices: a task needs only earlier tasks, so one recorded here
    makes the later ones that need it ready within the same pass.
    """
    for task in list(pending):
        if not all(n in results for n in task.needs) or not (task.run_dir / MODEL_FILE).exists():
            continue
        metrics = test_metrics(task.run_dir)
        if metrics is not None:
            check_run_dir(task.config, task.run_dir)  # a finished run of another config is refused
            pending.remove(task)
            results[task.name] = metrics
            log(f"done {task.name} ({task.run_dir}: finished earlier)")


def _work(
    config: RunConfig, run_dir: Path, threads: int, parent: int, sender: Connection, cuda_devices: str | None = None
) -> None:
    """A worker process: run one task (on the GPUs ``cuda_devices`` names, if given, as its
    ``CUDA_VISIBLE_DEVICES``) and send ``(error or None, log line)`` back."""
    if cuda_devices is not None:  # before anything starts CUDA in this process
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda_devices
    try:  # Linux: SIGTERM when the parent dies, even by SIGKILL (prctl PR_SET_PDEATHSIG = 1)
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        return
    torch.set_num_threads(threads)
    try:
        sender.send((None, train_and_evaluate(config, Path(run_dir))))
    except BaseException as error:  # noqa: BLE001 - every failure goes back to the parent, Ctrl-C too
        try:
            message = pickle.dumps(error)
        except Exception:  # an exception that does not pickle
            message = b""
        if not message or len(message) > 16384:  # the parent reads after this process ends: fit the pipe
            error = RuntimeError(f"{type(error).__name__}: {str(error)[:4000]}")
        sender.send((error, ""))
