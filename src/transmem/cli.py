"""The ``transmem`` command line.

    transmem train CONFIG.toml --out RUN_DIR [--set section.key=value ...] [--force]
    transmem evaluate RUN_DIR [--out metrics.json] [--split test|val]
    transmem inspect RUN_DIR [--split val|test] [--sequences N]
    transmem predict RUN_DIR --input FRAMES.npy --out DIR [--horizon N] [--truth TRUTH.npy] [--force]
    transmem data preview NAME --out FILE.gif [--set data.key=value ...]
    transmem zoo list DIR
    transmem zoo rank SOURCE... --target CONFIG.toml --out DIR [--set key=value ...] [--probe N]
    transmem zoo build --out DIR [--sources NAME ...] [--jobs N] [--install]
    transmem --version

Expected failures (bad config, bad data, unusable checkpoints or sources, a run folder
holding another run, a path that cannot be read or written, a full disk) print one line
``transmem: error: ...`` and exit with status 2; nothing is written or deleted (a full disk:
nothing half-written is kept). A diverged run exits with 3 (the line names the iteration, what
overflowed, the checkpoint kept and what to try: see :class:`transmem.errors.TrainingDiverged`),
running out of memory with 4, Ctrl-C with 130 (rerunning the same command resumes). A stdout closed by its reader (``transmem zoo list DIR | head -1``) ends the output
quietly with status 141, as a Unix tool killed by SIGPIPE does.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from transmem.errors import ConfigError  # the CLI loads no torch before it must (transmem --help)

if TYPE_CHECKING:
    from transmem.benchmark.request import BenchmarkRequest
    from transmem.speed.request import SpeedRequest

EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_OUT_OF_MEMORY = 4
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what the shell reports for a Unix tool whose reader went away


def _one_line(error: BaseException, limit: int = 1000) -> str:
    """The error's message on one line (inner line breaks become spaces), at most ``limit`` chars."""
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _os_error_message(error: OSError) -> str:
    """One clear line for an unreadable or unwritable path, instead of a raw ``[Errno N]`` text."""
    import errno

    # A full disk can fail a write whose error names no file (a write to an open file).
    where = error.filename if error.filename is not None else ("a write" if error.errno == errno.ENOSPC else "a path")
    reasons = {
        errno.ENOTDIR: "a part of this path is a file, not a folder",
        errno.EISDIR: "is a folder, not a file",
        errno.EEXIST: "already exists and is not a folder",
        errno.ENOENT: "no such file or folder",
        errno.ENOSPC: "no space left on device; free some space and rerun the same command (a run resumes from its last checkpoint)",
    }
    if error.errno in reasons:
        return f"{where}: {reasons[error.errno]}"
    return _one_line(error)


def _check_out(path: str, folder: bool, option: str = "--out") -> Path:
    """``path`` given to ``option`` as a place to write a folder (or a file), else a one-line
    ConfigError saying why it is not one; nothing is written."""
    out = Path(path)
    for parent in out.parents:  # the nearest existing ancestor must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{option} {out}: {parent} is a file, not a folder")
            break
    if folder and out.exists() and not out.is_dir():
        raise ConfigError(f"{option} {out}: exists and is not a folder")
    if not folder and out.is_dir():
        raise ConfigError(f"{option} {out}: is a folder; give a file name")
    return out


def _out_of_memory_message(error: BaseException) -> str | None:
    """A one-line message if ``error`` is a failed allocation (host or device), else None."""
    from transmem.memory_errors import allocation_size, is_out_of_memory

    if not is_out_of_memory(error):
        return None
    size = allocation_size(error)
    return (
        f"out of memory{f' (tried to allocate {size})' if size else ''}: free memory and rerun the same "
        "command to resume from the last checkpoint, or lower data.batch_size, model.hidden or the frame "
        "size in a new --out folder (or with --force)"
    )


def _version() -> str:
    """The installed package's version (importlib.metadata), else the source tree's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transmem")
    except PackageNotFoundError:
        from transmem.version import __version__

        return __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transmem", description="Unsupervised transfer between spatiotemporal predictive networks."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    parser.add_argument("--version", action="version", version=f"transmem {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train (or resume) a run")
    train.add_argument("config", help="TOML run configuration")
    train.add_argument("--out", required=True, help="run folder (resumed if it holds this run)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    train.add_argument(
        "--force", action="store_true", help="start over in a folder holding another run (old files are renamed, not deleted)"
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    evaluate = commands.add_parser("evaluate", help="score a run on its test set")
    evaluate.add_argument("run", help="run folder, model.safetensors or checkpoint")
    evaluate.add_argument("--out", help="metrics JSON (default RUN/metrics.json, RUN/metrics_val.json for --split val)")
    evaluate.add_argument("--split", default="test", choices=["test", "val"])

    inspect = commands.add_parser("inspect", help="memory scale and transfer gates of a trained run, step by step")
    inspect.add_argument("run", help="run folder, model.safetensors or checkpoint")
    inspect.add_argument("--split", default="val", choices=["val", "test"])
    inspect.add_argument("--sequences", type=int, default=16, help="number of sequences (the split's first ones)")

    predict = commands.add_parser(
        "predict",
        help="predict future frames of given sequences",
        description="Predict the frames after --input. Writes OUT/prediction.npy, always float32 (B, T, C, H, W) in "
        "[0, 1] whatever the input's dtype or rank, and per sequence a PNG strip and a GIF of input, truth and prediction.",
    )
    predict.add_argument("run", help="run folder, model.safetensors or checkpoint")
    predict.add_argument(
        "--input",
        required=True,
        help=".npy of (T, H, W), (T, C, H, W) or (B, T, C, H, W); uint8 or float in [0, 1]; frames past the run's T_in "
        "are taken as the truth (unless --truth is given)",
    )
    predict.add_argument("--out", required=True, help="output folder (refused if it holds predictions, unless --force)")
    predict.add_argument(
        "--horizon",
        type=int,
        help="frames to predict (default: as many as the true frames, from --truth or --input, else the run's T_out)",
    )
    predict.add_argument("--truth", help="optional .npy of the true future frames, drawn next to the prediction")
    predict.add_argument(
        "--force",
        action="store_true",
        help="write into an --out folder holding predictions (the old files are renamed *.previous-<time>)",
    )

    data = commands.add_parser("data", help="datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    preview = data_commands.add_parser("preview", help="write a GIF of a few sequences")
    preview.add_argument("name", help="dataset name (see `transmem data list`)")
    preview.add_argument("--out", required=True, help="GIF file")
    preview.add_argument("--split", default="train", choices=["train", "val", "test"])
    preview.add_argument("--num", type=int, default=4, help="number of sequences")
    preview.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    data_commands.add_parser("list", help="list the registered datasets")

    bench = commands.add_parser("benchmark", help="run (or resume) a transfer benchmark suite")
    bench.add_argument("suite", help="a suite file (TOML: target, sources, methods) or a shipped suite: digits | far | video")
    bench.add_argument("--profile", default="quick", help="quick | full | lowdata | paper")
    bench.add_argument("--out", required=True, help="benchmark folder (resumed if it exists)")
    bench.add_argument("--methods", nargs="+", help="only these methods, one or more (default: all of the suite)")
    bench.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a key of every run"
    )
    bench.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="target seeds (default: the profile's)")
    bench.add_argument(
        "--target-set",
        dest="target_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of every target run only (after --set)",
    )
    bench.add_argument(
        "--choose",
        action="append",
        metavar="KEY=VALUE",
        help="a candidate value of one target setting (give two or more, e.g. --choose train.lr=0.001 --choose "
        "train.lr=0.0001): every target trains with each, in OUT/KEY=VALUE/, and each method keeps the value "
        "whose runs have the lowest validation MSE",
    )
    bench.add_argument(
        "--zoo",
        help="folder of the source runs, shared between suites (default: OUT/sources); 'builtin': the sources "
        "that ship with transmem where they match the profile (the others are trained in OUT/sources)",
    )
    bench.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="train N runs at once in worker processes, each with 1/N of torch's threads (default 1)",
    )
    bench.add_argument(
        "--budget",
        default="iterations",
        choices=["iterations", "flops"],
        help="what every method gets the same of: the profile's iterations (default), or the training FLOPs of the "
        "costliest method in them (cheaper methods train longer)",
    )
    bench.add_argument(
        "--budget-of",
        metavar="METHOD",
        help="with --budget flops: the budget is what METHOD spends in the profile's iterations, whether or not it "
        "is run (methods added later get an earlier benchmark's budget)",
    )
    look = bench.add_mutually_exclusive_group()  # each answers instead of training
    look.add_argument("--status", action="store_true", help="show where each run stands; train nothing")
    look.add_argument(
        "--estimate",
        action="store_true",
        help="time one training step on the runs' device and print how long the training left would take; train nothing",
    )
    bench.add_argument("--no-progress", action="store_true")

    speed = commands.add_parser(
        "speed", help="measure training and inference speed, memory and efficiency, with the targets' ratios"
    )
    _speed_arguments(speed)

    zoo = commands.add_parser("zoo", help="source zoo")
    zoo_commands = zoo.add_subparsers(dest="zoo_command", required=True)
    zoo_list = zoo_commands.add_parser("list", help="describe the sources in a folder")
    zoo_list.add_argument("folder", help='a folder of sources, or "builtin" (the sources that ship with transmem)')
    zoo_rank = zoo_commands.add_parser(
        "rank", help="rank sources for a target on its validation split (zero-shot MSE and a short finetune probe)"
    )
    zoo_rank.add_argument("sources", nargs="*", help="source run folders or model files")
    zoo_rank.add_argument("--target", required=True, help="the target's TOML run configuration (its data, model and optimiser)")
    zoo_rank.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a key of the target config"
    )
    zoo_rank.add_argument(
        "--probe",
        type=int,
        default=None,
        metavar="N",
        help="finetune probe iterations per source (default: the target's transfer.rank_probe, 100; 0 = zero-shot only)",
    )
    zoo_rank.add_argument("--out", required=True, help="folder for the probe runs and rank.json (reused when run again)")
    zoo_rank.add_argument("--no-progress", action="store_true")
    zoo_build = zoo_commands.add_parser("build", help="train the builtin sources from scratch (resumable) and pack them")
    zoo_build.add_argument("--out", required=True, help="folder for the source runs and the packed builtin_zoo/")
    zoo_build.add_argument("--sources", nargs="+", metavar="NAME", help="builtin sources to build (default: all)")
    zoo_build.add_argument("--jobs", type=int, default=1, metavar="N", help="train N sources at once")
    zoo_build.add_argument(
        "--install", action="store_true", help="copy them into the package's builtin_zoo/ (an editable install's source tree)"
    )
    return parser


def _train(args) -> int:
    from transmem.config import load_config
    from transmem.run.lifecycle import train

    config = load_config(args.config, args.overrides)
    _check_out(args.out, folder=True)
    result = train(
        config, args.out, force=args.force, progress=not args.no_progress, announce=lambda line: print(line, flush=True)
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun, rank 0 reports
    if result.resumed_from >= result.iterations and not result.val:
        print(f"{args.out}: already finished ({result.iterations} iterations); nothing to do")
        return 0
    summary = ", ".join(f"{k} {v:.4g}" for k, v in result.val.items())
    print(
        f"trained {args.out}: {result.iterations} iterations in {result.seconds:.0f} s"
        + (f"; validation {summary}" if summary else "")
    )
    return 0


def _evaluate(args) -> int:
    from transmem.evaluation.evaluate import evaluate_run
    from transmem.evaluation.report import format_metrics_table, format_transfer_gates
    from transmem.transfer.zoo import source_name

    if args.out:
        _check_out(args.out, folder=False)
    result = evaluate_run(args.run, args.out, args.split)
    print(format_metrics_table(result["model"], baseline=result["copy_last_frame"]))
    if result["transfer_gates"]:
        names = [source_name(s) for s in result["sources"]]
        print(
            f"\nmean transfer gate per layer and source (steps 1-{result['input_len']} read input frames, the later ones predictions):"
        )
        print(format_transfer_gates(result["transfer_gates"], names, result["input_len"]))
    return 0


def _inspect(args) -> int:
    import torch

    from transmem.data import DataError, build_dataset
    from transmem.evaluation.memory_scale import format_memory_scale, memory_scale
    from transmem.storage.model_file import load_model
    from transmem.transfer.zoo import source_name

    if args.sequences < 1:
        raise ConfigError(f"inspect: --sequences must be >= 1, got {args.sequences}")
    loaded = load_model(args.run)
    config = loaded.config
    dataset = build_dataset(config.data, args.split)
    if len(dataset) == 0:
        raise DataError(f"inspect: the run's {args.split} split is empty (data.{args.split}_size = 0)")
    frames = torch.stack([dataset[i] for i in range(min(args.sequences, len(dataset)))])
    scale = memory_scale(loaded.model.eval(), frames, config.data.input_len)
    print(
        f"{args.run}: {len(frames)} {args.split} sequences, the model feeding its own predictions after frame {config.data.input_len}"
    )
    print(format_memory_scale(scale, [source_name(s) for s in config.transfer.sources]))
    return 0


def _prediction_out(path: str, force: bool) -> Path:
    """The ``predict --out`` folder; refused if it is a file, or holds predictions and not ``force``
    (then the old prediction files are renamed ``*.previous-<time>``). Nothing is written here."""
    from transmem.data import DataError
    from transmem.predictor import PREDICTION_FILES

    out = _check_out(path, folder=True)
    found = sorted(p.name for pattern in PREDICTION_FILES for p in out.glob(pattern)) if out.is_dir() else []
    if found and not force:
        shown = ", ".join(found[:3]) + (" ..." if len(found) > 3 else "")
        raise DataError(
            f"--out {out}: holds earlier predictions ({shown}); choose another --out or pass --force to keep them renamed *.previous-<time>"
        )
    return out


def _predict(args) -> int:
    from transmem.data import read_frames_file
    from transmem.predictor import PREDICTION_FILE, input_warnings, load, match_frames, set_aside_predictions, write_predictions

    if args.horizon is not None and args.horizon < 1:
        raise ConfigError(f"--horizon: must be at least 1, got {args.horizon}")
    out = _prediction_out(args.out, args.force)
    predictor = load(args.run)
    data = predictor.config.data
    frames = read_frames_file(args.input)
    truth = read_frames_file(args.truth) if args.truth else None
    frames, truth = match_frames(frames, truth, data, args.input, args.truth)
    for line in input_warnings(frames, data, predictor.model.patch, args.input, predictor.model.frame_size):
        print(f"transmem: warning: {line}", file=sys.stderr)
    horizon = args.horizon or (truth.shape[1] if truth is not None else data.total_len - data.input_len)
    prediction = predictor.predict(frames, horizon)
    if args.force and out.is_dir():
        set_aside_predictions(out)
    write_predictions(out, frames, truth, prediction)
    print(
        f"wrote {out / PREDICTION_FILE} (float32 (B, T, C, H, W) = {tuple(prediction.shape)}) and "
        f"{prediction.shape[0]} PNG strip(s) and GIF(s) in {out}"
    )
    return 0


def _data(args) -> int:
    from transmem.data import DATASETS

    if args.data_command == "list":
        for name, spec in DATASETS.items():
            print(f"{name:22s} {spec.description}")
        return 0
    from transmem.config import config_from_dict
    from transmem.evaluation.preview import preview_dataset

    if Path(args.out).suffix.lower() != ".gif":
        raise ConfigError(f"--out {args.out}: a preview is an animated GIF; give a file name ending in .gif")
    _check_out(args.out, folder=False)
    config = config_from_dict({"data": {"name": args.name}}, args.overrides)
    preview_dataset(config.data, args.split, args.num, args.out)
    print(f"wrote {args.out}")
    return 0


def _zoo(args) -> int:
    if args.zoo_command == "rank":
        return _zoo_rank(args)
    if args.zoo_command == "build":
        from transmem.benchmark.zoo_build import build_builtin_zoo

        if args.jobs < 1:
            raise ConfigError(f"zoo build: --jobs must be at least 1, got {args.jobs}")
        build_builtin_zoo(args.out, args.sources, args.jobs, args.install)
        return 0
    from transmem.storage.run_folder import CHECKPOINT_DIR, MODEL_FILE
    from transmem.transfer.zoo import SourceError, describe_zoo, format_zoo

    rows = describe_zoo(args.folder)
    if not rows:
        raise SourceError(
            f"{args.folder}: no sources found (a source is a run folder holding {MODEL_FILE} or {CHECKPOINT_DIR}/, "
            f"or a .safetensors / .pt file)"
        )
    print(format_zoo(rows))
    return 0


def _zoo_rank(args) -> int:
    import json

    from transmem.config import load_config
    from transmem.run.ranking import format_ranking, rank_sources
    from transmem.storage.files import atomic_write_text
    from transmem.transfer.zoo import SourceError, load_zoo

    if not args.sources:
        raise SourceError("zoo rank: no sources given (name source run folders or model files)")
    target = load_config(args.target, args.overrides)
    probe = target.transfer.rank_probe if args.probe is None else args.probe
    if probe < 0:
        raise ConfigError(f"zoo rank: --probe must be >= 0, got {probe}")
    sources = load_zoo(args.sources, target, [0])
    rows = rank_sources(sources, target, args.out, probe, progress=not args.no_progress)
    out = Path(args.out) / "rank.json"
    atomic_write_text(out, json.dumps({"target": args.target, "probe": probe, "rows": rows}, indent=1))
    print(f"sources for {args.target} on its validation split ({len(rows)} sources, probe {probe} iterations):")
    print(format_ranking(rows))
    print(f"wrote {out}")
    return 0


def _benchmark_request(args) -> BenchmarkRequest:
    from transmem.benchmark.request import BUILTIN_ZOO, BenchmarkRequest
    from transmem.config import parse_setting

    _check_out(args.out, folder=True)
    if args.zoo and args.zoo != BUILTIN_ZOO:
        _check_out(args.zoo, folder=True, option="--zoo")
    return BenchmarkRequest(
        suite=args.suite,
        out=Path(args.out),
        profile=args.profile,
        methods=tuple(args.methods) if args.methods else None,
        settings=tuple(parse_setting(text) for text in args.overrides),
        target_settings=tuple(parse_setting(text) for text in args.target_overrides),
        seeds=tuple(args.seeds) if args.seeds is not None else None,
        zoo=args.zoo,
        jobs=args.jobs,
        choose=tuple(args.choose or ()),
        budget=args.budget,
        budget_of=args.budget_of,
        progress=not args.no_progress,
    )


def _benchmark(args) -> int:
    from transmem.benchmark.runner import run_benchmark

    request = _benchmark_request(args)
    if args.status:
        return _benchmark_status(request)
    if args.estimate:
        from transmem.benchmark.estimate import estimate_training
        from transmem.benchmark.planning import plan_benchmark

        estimate = estimate_training(plan_benchmark(request).tasks, args.jobs)
        print(estimate.line() if estimate else f"benchmark {args.suite} ({args.profile}) in {args.out}: nothing left to train")
        return 0
    run_benchmark(request)
    return 0


def _benchmark_status(request) -> int:
    from transmem.benchmark.status import benchmark_status

    rows = benchmark_status(request)
    done = sum(row["state"] == "finished" for row in rows)
    print(f"benchmark {request.suite} ({request.profile}) in {request.out}: {done} of {len(rows)} runs finished")
    width = max(len(row["run"]) for row in rows)
    for row in rows:
        print(f"  {row['run']:<{width}}  {row['state']}")
    return 0


def _speed_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``transmem speed``: the fields of :class:`~transmem.speed.request.SpeedRequest`."""
    parser.add_argument(
        "--device", default="auto", help="where to measure: auto (CUDA when available), cpu, cuda or cuda:N (default auto)"
    )
    parser.add_argument("--config", default="both", choices=["small", "paper", "both"], help="configuration(s) to measure")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (default 10, --quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up calls (default 2, --quick 1)")
    parser.add_argument("--quick", action="store_true", help="few repeats: a rough table in a short time")
    parser.add_argument(
        "--precision", default="float32", choices=["float32", "bf16"], help="also time the step under bf16 autocast"
    )
    parser.add_argument("--compile", action="store_true", help="also time the step with torch.compile")
    parser.add_argument(
        "--cuda-graph",
        action="store_true",
        help="also time the plain step captured in a CUDA graph (train.cuda_graph; CUDA only)",
    )
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="also time the step with channels-last weights and states (train.channels_last)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument(
        "--memory-steps", type=int, default=None, help="training steps per peak-memory process (default 3, --quick 2)"
    )
    parser.add_argument("--json", help="also write every measurement to this JSON file")
    parser.add_argument("--workdir", help="folder for the sources and the cached bank (default: a temporary folder)")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 if a target fails")
    parser.add_argument(
        "--shared-machine",
        action="store_true",
        help="only measure two trainings side by side against one alone, per OpenMP wait policy (see speed/sharing.py)",
    )
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests: a tiny configuration


def _speed_request(args: argparse.Namespace) -> SpeedRequest:
    """``transmem speed``'s options as a checked :class:`~transmem.speed.request.SpeedRequest`."""
    from transmem.speed.request import SpeedRequest  # loads torch: not before the command runs

    return SpeedRequest(
        device=args.device,
        config=args.config,
        repeats=args.repeats,
        warmup=args.warmup,
        quick=args.quick,
        precision=args.precision,
        compile_model=args.compile,
        cuda_graph=args.cuda_graph,
        channels_last=args.channels_last,
        threads=args.threads,
        memory=not args.no_memory,
        memory_steps=args.memory_steps,
        json_path=Path(args.json) if args.json else None,
        workdir=Path(args.workdir) if args.workdir else None,
        strict=args.strict,
        shared_machine=args.shared_machine,
        tiny=args.tiny,
    )


def _speed(args) -> int:
    from transmem.speed.measure import measure_speed

    return measure_speed(_speed_request(args))


COMMANDS = {
    "benchmark": _benchmark,
    "speed": _speed,
    "train": _train,
    "evaluate": _evaluate,
    "inspect": _inspect,
    "predict": _predict,
    "data": _data,
    "zoo": _zoo,
}


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's flush at exit writes nowhere instead
    of failing again on the closed pipe (Python's documented recipe for SIGPIPE)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout replaced by an object without a file descriptor
        pass
    finally:
        os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    from transmem.errors import EXPECTED_ERRORS, TrainingDiverged

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        status = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed stdout shows here, not at exit as an "Exception ignored" traceback
        return status
    except BrokenPipeError:  # stdout closed by its reader (`transmem zoo list DIR | head -1`): stop quietly
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except TrainingDiverged as error:
        print(f"transmem: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_DIVERGED
    except EXPECTED_ERRORS as error:
        print(f"transmem: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:  # unreadable/unwritable path, disk full
        print(f"transmem: error: {_os_error_message(error)}", file=sys.stderr)
        return EXIT_USAGE
    except (MemoryError, RuntimeError) as error:  # torch.OutOfMemoryError is a RuntimeError
        message = _out_of_memory_message(error)
        if message is None:
            raise
        print(f"transmem: error: {message}", file=sys.stderr)
        return EXIT_OUT_OF_MEMORY
    except KeyboardInterrupt:
        print("transmem: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
    finally:
        from transmem.training.distributed import shutdown_distributed

        shutdown_distributed()
    # Interrupted. Exit here: CPython remembers a KeyboardInterrupt raised inside some
    # extension code paths even once handled, and would end the process "killed by SIGINT"
    # (status -2) instead of 130. Everything transmem writes is already atomic and closed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
