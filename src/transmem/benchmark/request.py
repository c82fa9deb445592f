"""What a user asks of ``transmem benchmark``: one frozen request, checked in one place."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transmem.config import ConfigError, format_setting

BUDGETS = ("iterations", "flops")  # what every method of a benchmark gets the same of
BUILTIN_ZOO = "builtin"  # --zoo builtin: the sources that ship with transmem, where they match the profile


@dataclass(frozen=True)
class BenchmarkRequest:
    """One benchmark: a suite (a suite file or a shipped suite's name) under a profile, into ``out``.

    ``settings`` (``--set``) apply to every source and target after the profile's own;
    ``target_settings`` (``--target-set``) to the targets only, after those. ``seeds``
    replaces the profile's target seeds. ``zoo``: the folder of the source runs (default
    ``out/sources``), or ``"builtin"``. ``choose``: two or more ``section.key=value`` values of
    one target setting, chosen per method on validation. ``budget``: ``"iterations"`` (every
    method the profile's iterations) or ``"flops"`` (every method the training FLOPs of the
    costliest, or of ``budget_of``, a method that need not be run).
    """

    suite: str
    out: Path
    profile: str = "quick"
    methods: tuple[str, ...] | None = None
    settings: tuple[tuple[str, Any], ...] = ()
    target_settings: tuple[tuple[str, Any], ...] = ()
    seeds: tuple[int, ...] | None = None
    zoo: str | None = None
    jobs: int = 1
    choose: tuple[str, ...] = ()
    budget: str = "iterations"
    budget_of: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ConfigError(f"benchmark: --jobs must be at least 1, got {self.jobs}")
        if self.budget not in BUDGETS:
            raise ConfigError(f"benchmark: --budget must be one of {', '.join(BUDGETS)}, got {self.budget!r}")
        if self.budget_of is not None and self.budget != "flops":
            raise ConfigError(f"benchmark: --budget-of {self.budget_of} needs --budget flops")
        if self.seeds is not None and (
            not self.seeds or len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds)
        ):
            raise ConfigError(f"--seeds: must be distinct non-negative integers, got {list(self.seeds)}")

    @property
    def builtin_zoo(self) -> bool:
        return self.zoo == BUILTIN_ZOO

    def zoo_folder(self) -> Path:
        """The folder of the source runs the benchmark trains: ``zoo`` if it is a folder, else
        ``out/sources`` (also for ``--zoo builtin``: sources the builtin zoo lacks are trained there)."""
        return Path(self.zoo).resolve() if self.zoo is not None and not self.builtin_zoo else Path(self.out).resolve() / "sources"

    def command(self, extra: tuple[str, ...] = ()) -> str:
        """The ``transmem benchmark`` command line that reruns this benchmark into ``DIR``, as
        results.md prints it: every option that changes what is run."""
        words = ["transmem", "benchmark", self.suite, "--profile", self.profile, "--out", "DIR"]
        words += ["--zoo", str(self.zoo)] if self.zoo else []
        words += ["--methods", *self.methods] if self.methods else []
        words += ["--seeds", *map(str, self.seeds)] if self.seeds is not None else []
        words += [w for key, value in self.settings for w in ("--set", format_setting(key, value))]
        words += [w for key, value in self.target_settings for w in ("--target-set", format_setting(key, value))]
        words += [w for value in extra for w in ("--target-set", value)]
        words += [w for value in self.choose for w in ("--choose", value)]
        words += ["--budget", self.budget] if self.budget != "iterations" else []
        words += ["--budget-of", self.budget_of] if self.budget_of else []
        words += ["--jobs", str(self.jobs)] if self.jobs > 1 else []
        return shlex.join(words)
