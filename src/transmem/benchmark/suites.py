"""Transfer benchmark suites, the methods they compare, and budget profiles.

A **suite** is a TOML file (``transmem benchmark SUITE`` takes its path, or the name of a
shipped suite, ``configs/<name>/suite.toml``)::

    description = "my radar frames from the builtin zoo"
    target = "target.toml"                              # the target's run config, relative to this file
    methods = ["scratch", "finetune_best", "fusion"]    # optional: default every method that applies
    [sources]                                           # name = where the source comes from
    digits2 = "builtin:digits2"                         # a source that ships with transmem
    radar2019 = "runs/radar2019"                        # a finished run folder or model file
    balls = "source_balls.toml"                         # a source config: the benchmark trains it

Paths are relative to the suite file. The **methods** are the catalogue of
``configs/methods.toml``: each is the target config with its ``[transfer]`` section replaced
by the method's. A **profile** scales every run (iterations, dataset sizes) and sets the
seeds; it never changes what is compared. Profiles (reasoning in docs/benchmark.md):

- ``quick``: one seed, short target runs at the real frame size from the ``full`` profile's
  sources, which the builtin zoo ships (``--zoo builtin``, what ``make demo`` uses). A smoke
  test of the whole protocol, not a verdict.
- ``full``: three seeds, sources trained 4x longer than targets, targets long enough for
  scratch training to leave the copy-last-frame regime.
- ``lowdata``: ``full`` with 100 target training sequences and best-validation weights.
- ``paper``: the authors' protocol for ``digits`` (ConvLSTM 4 x 64, 80,000 iterations):
  CUDA only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from transmem.config import ConfigError, tomllib
from transmem.transfer.builtin import PREFIX

SUITE_FILE = "suite.toml"  # a shipped suite is configs/<name>/suite.toml
METHODS_FILE = "methods.toml"
SUITE_KEYS = ("description", "target", "methods", "sources")
METHOD_KEYS = ("description", "transfer", "reads_sources", "per_source", "opt_in", "wide", "target")


def configs_root() -> Path:
    """The shipped configs folder (``configs/`` of the installed package)."""
    return Path(str(files("transmem") / "configs"))


# ----------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class MethodSpec:
    """One method of the catalogue: the ``[transfer]`` table it gives the target, any other
    settings of the target it needs, and how the planner treats it."""

    name: str
    description: str
    transfer: dict[str, Any]
    reads_sources: bool = True  # False: trains from random weights, reads no source
    per_source: bool = False  # one run per source, named <name>_<source>
    opt_in: bool = False  # run only when --methods names it (a control, or the release's step)
    wide: bool = False  # model.hidden = transfer.fuse x the sources' (set by the planner)
    # "section.key" settings of the target beyond [transfer] (tmu_release: model.norm, ...),
    # applied after the profile's target settings and before the user's
    target: dict[str, Any] = field(default_factory=dict)


@lru_cache(maxsize=1)
def benchmark_methods() -> dict[str, MethodSpec]:
    """The method catalogue, in the order tables list it (``configs/methods.toml``)."""
    raw = tomllib.loads((configs_root() / METHODS_FILE).read_text())
    methods = {}
    for name, table in raw.items():
        unknown = sorted(set(table) - set(METHOD_KEYS))
        if unknown:  # a shipped file: a slip here is the package's, caught by the tests
            raise ConfigError(f"{METHODS_FILE} [{name}]: unknown key(s) {', '.join(unknown)}")
        methods[name] = MethodSpec(name, **table)
    return methods


def catalogue_method(name: str) -> str | None:
    """The catalogue method that a table's method ``name`` runs: itself, or for a per-source
    method its catalogue name (``finetune_digits1`` -> ``finetune``); None if neither."""
    methods = benchmark_methods()
    if name in methods:
        return name
    return next((m for m, spec in methods.items() if spec.per_source and name.startswith(f"{m}_")), None)


# ----------------------------------------------------------------------------- suites


@dataclass(frozen=True)
class Suite:
    """A suite file, read and checked: its target config and its sources, as paths."""

    name: str  # the shipped suite's name, or the file's stem
    path: Path  # the suite file
    description: str
    target: Path  # the target's run config
    sources: dict[str, str]  # name -> "builtin:NAME", a run folder or model file, or a source config (.toml)
    methods: tuple[str, ...]  # what runs when --methods is not given

    def trains(self, name: str) -> bool:
        """Whether source ``name`` is a config that the benchmark trains."""
        return self.sources[name].endswith(".toml")

    def available(self) -> dict[str, MethodSpec]:
        """The catalogue's methods this suite can run (those reading sources need some)."""
        return {n: m for n, m in benchmark_methods().items() if self.sources or not m.reads_sources}


def shipped_suites() -> list[str]:
    """The names of the suites that ship with transmem."""
    return sorted(p.parent.name for p in configs_root().glob(f"*/{SUITE_FILE}"))


def suite_path(spec: str | Path) -> Path:
    """The file of suite ``spec``: a shipped suite's name, or a path to a suite file."""
    text = str(spec)
    if text in shipped_suites():
        return configs_root() / text / SUITE_FILE
    path = Path(text)
    if not path.is_file():
        known = ", ".join(shipped_suites())
        raise ConfigError(f"suite {text}: neither a suite file nor a shipped suite ({known})")
    return path.resolve()


def load_suite(spec: str | Path) -> Suite:
    """Read and check a suite file; ConfigError (one line) for anything wrong in it."""
    path = suite_path(spec)
    try:
        raw = tomllib.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    unknown = sorted(set(raw) - set(SUITE_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; a suite file has {', '.join(SUITE_KEYS)}")
    if not isinstance(raw.get("target"), str):
        raise ConfigError(f'{path}: no target; name the target\'s run config, e.g. target = "target.toml"')
    target = (path.parent / raw["target"]).resolve()
    if not target.is_file():
        raise ConfigError(f"{path}: target {raw['target']}: config file not found ({target})")
    sources = _suite_sources(path, raw.get("sources", {}))
    name = path.parent.name if path.name == SUITE_FILE and path.parent.parent == configs_root() else path.stem
    suite = Suite(name, path, str(raw.get("description", name)), target, sources, ())
    return _with_methods(suite, raw.get("methods"))


def _suite_sources(path: Path, table: Any) -> dict[str, str]:
    """``[sources]`` with every path made absolute (relative to the suite file)."""
    if not isinstance(table, dict):
        raise ConfigError(f'{path}: sources must be a table of name = "path"')
    sources = {}
    for name, where in table.items():
        if not isinstance(where, str) or not where:
            raise ConfigError(f"{path}: sources.{name}: expected a path, a source config or builtin:NAME, got {where!r}")
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"{path}: sources.{name}: a source name is letters, digits, - and _ (it names folders)")
        sources[name] = where if where.startswith(PREFIX) else str((path.parent / where).resolve())
    return sources


def _with_methods(suite: Suite, listed: Any) -> Suite:
    available = suite.available()
    if listed is None:
        return replace(suite, methods=tuple(n for n, m in available.items() if not m.opt_in))
    if not isinstance(listed, list) or not all(isinstance(m, str) for m in listed) or not listed:
        raise ConfigError(f"{suite.path}: methods must be a non-empty list of method names")
    unknown = [m for m in listed if m not in available]
    if unknown:
        why = "" if suite.sources else " (a suite without sources runs only methods that read none)"
        raise ConfigError(f"{suite.path}: unknown method(s) {', '.join(unknown)}; known: {', '.join(available)}{why}")
    return replace(suite, methods=tuple(dict.fromkeys(listed)))


# ----------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class Profile:
    """The budget of every run of a benchmark: settings (``"section.key": value``) applied
    to the sources and to the targets, and the target seeds."""

    seeds: tuple[int, ...]
    source_settings: dict[str, Any]
    target_settings: dict[str, Any]
    gif_sequences: int = 4
    notes: str = ""
    suites: tuple[str, ...] = ()  # the suites it applies to (empty: every suite)
    needs_cuda: bool = False  # refused on the CPU, with the time it would take there


SOURCES_FULL = {"train.iterations": 6000, "train.checkpoint_every": 250}

PROFILES: dict[str, Profile] = {
    "quick": Profile(
        seeds=(0,),
        # the full profile's sources: the builtin zoo ships them (--zoo builtin), so quick trains targets only
        source_settings=SOURCES_FULL,
        target_settings={
            "train.iterations": 150,  # eleven methods two at a time in under 10 min on 2 cores (make demo)
            "train.checkpoint_every": 50,
            "train.val_every": 50,
            "data.train_size": 400,
            "data.val_size": 50,
            "data.test_size": 100,
        },
        gif_sequences=4,
        notes="sources 6000 iterations (the builtin zoo's, with --zoo builtin), targets 150 iterations on 400 training sequences",
    ),
    "full": Profile(
        seeds=(0, 1, 2),
        source_settings=SOURCES_FULL,
        target_settings={"train.iterations": 1500, "train.checkpoint_every": 250, "train.val_every": 250},
        gif_sequences=6,
        notes="sources 6000 iterations, targets 1500 iterations on 1000 training sequences",
    ),
}
PROFILES["lowdata"] = Profile(
    seeds=PROFILES["full"].seeds,
    source_settings=SOURCES_FULL,
    # 100 sequences overfit within 1500 iterations (scratch: validation MSE 186.7 at 750, 197.6
    # at 1500), so every target keeps its best-validation weights, validated every 100 iterations
    target_settings={
        **PROFILES["full"].target_settings,
        "data.train_size": 100,
        "train.val_every": 100,
        "train.weights": "best_val",
    },
    gif_sequences=PROFILES["full"].gif_sequences,
    notes="sources 6000 iterations (as full), targets 1500 iterations on 100 training sequences, best-validation weights",
)

#: The authors' protocol (thuml/transferable-memory, Moving MNIST): the backbone of the paper
#: (the release's ConvLSTM has no normalisation outside the TMU layer), its optimiser and
#: schedule, for sources and targets alike; every sequence generated online.
PAPER_RUN = {
    "model.hidden": [64, 64, 64, 64],
    "model.kernel": 5,
    "model.patch": 4,
    "model.norm": "none",
    "data.batch_size": 8,
    "data.train_size": 0,
    "train.lr": 0.0003,
    "train.lr_schedule": "none",
    "train.iterations": 80000,
    "train.sampling_stop": 0.625,  # scheduled sampling until iteration 50,000 of 80,000
    "train.checkpoint_every": 1000,
    "train.log_every": 100,
}
PROFILES["paper"] = Profile(
    seeds=(0, 1, 2),
    source_settings=PAPER_RUN,
    target_settings={**PAPER_RUN, "train.val_every": 5000, "data.test_size": 1000},
    gif_sequences=6,
    notes="the paper's protocol: ConvLSTM 4 x 64, 5x5, batch 8, lr 3e-4, sources and targets 80,000 iterations, online data",
    suites=("digits",),
    needs_cuda=True,
)
