"""The transfer benchmark: suites of sources and target methods, run with one budget."""

from transmem.benchmark.runner import plan_runs, run_benchmark, write_results
from transmem.benchmark.suites import PROFILES, SUITES, Profile, Suite

__all__ = ["PROFILES", "SUITES", "Profile", "Suite", "plan_runs", "run_benchmark", "write_results"]
