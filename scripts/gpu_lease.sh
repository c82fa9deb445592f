#!/usr/bin/env bash
# One command that makes a short GPU lease count (at most 9 minutes: LIMIT_S, default 525 s,
# ends it): it installs what the machine lacks, runs the CUDA tests and `transmem speed` on
# CUDA with every fast-path option, then the long-budget `digits` comparison of scratch,
# finetune_best, fusion, tmu_ft and tmu_release at the full profile's network size (2 x 32) from
# the builtin sources, many small trainings at once on the one GPU. Every log, the speed JSONs,
# the benchmarks' results.* and each run's train.csv / val.csv end up under $OUT.
#
#   bash scripts/gpu_lease.sh              # on the GPU machine (OUT defaults to gpu_lease/)
#   bash scripts/gpu_lease.sh --dry-run    # the same plan on the CPU at tiny shapes (about a minute)
#
# The steps, each under `timeout` within one deadline (START + LIMIT_S):
#  1. wheels in .whl/ whose distribution is not installed go to /tmp/transmem-site
#     (pip --no-index --no-deps); transmem itself runs from src/ (PYTHONPATH), nothing is built;
#  2. a pilot: the whole comparison (same methods, seeds, --jobs) at PILOT_ITERS (200) target
#     iterations. Its train.csv logs time each run's step while the others train beside it,
#     and it checks the whole pipeline before the long run. The plan is printed from it: each
#     run's seconds per iteration and its expected time at ITERS (20,000) iterations;
#  3. the CUDA tests (pytest -m cuda, the test files that have such tests), at most 120 s;
#  4. transmem speed --device cuda --config both --quick --cuda-graph --channels-last
#     --precision bf16 -> speed.json, at most 150 s;
#  5. the comparison itself, with the time left (SPEED_COMPILE_S is kept for step 6): ITERS
#     target iterations, or fewer if the pilot's steps say they do not fit; below MIN_ITERS
#     (1500, the full profile's) the methods are dropped in the order of DROP_ORDER
#     (tmu_release, fusion, tmu_ft), never scratch and finetune_best, never below 2 seeds;
#     then SPEED_COMPILE_S goes to the comparison too. Targets train on train.device=cuda
#     (a worker that cannot reach the GPU fails instead of training on the CPU); nvidia-smi is
#     sampled every 5 s (gpu_monitor.log: how many processes were on the GPU at once);
#  6. transmem speed --compile (SPEED_COMPILE_ARGS: the 2 x 32 network, float32) -> speed_compile.json,
#     in the time left.
#
# What comes back ($OUT, at most 8 files, as the lease tool brings back): gpu_lease.tar.gz
# (everything: logs, speed JSONs, the pilot's and the comparison's results.*, comparison.csv,
# pictures, source ranking, each run's train.csv, val.csv, metrics.json, config.toml, the GPU
# samples), and loose: summary.txt, lease.log, speed.json, results.md, results.csv (the
# comparison's, else the pilot's). KEEP_TREE=1 also keeps the unpacked $OUT/gpu_lease/.
# The benchmark folders (models, checkpoints) are in WORK (default a temporary folder, removed
# at the end unless WORK is given).
#
# Settings (environment): OUT, WORK, PYTHON, LIMIT_S, ITERS, MIN_ITERS, PILOT_ITERS, SEEDS,
# METHODS, DROP_ORDER, JOBS, SPEED_COMPILE_S, SPEED_COMPILE_ARGS, MARGIN, KEEP_TREE.
# Bring the wheels beforehand (here, where pip reaches PyPI): see docs/speed.md.
set -uo pipefail

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
DRY=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "gpu_lease: unknown argument $arg (--dry-run, --help)" >&2; exit 2 ;;
    esac
done

START=$(date +%s)
LIMIT_S=${LIMIT_S:-525}
DEADLINE=$((START + LIMIT_S))
PACK_S=20 # kept at the end: collect, pack
OUT="$(realpath -m "${OUT:-gpu_lease}")" # relative to where it is called from
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
TREE="$OUT/gpu_lease"
mkdir -p "$TREE" || exit 2
if [ -n "${WORK:-}" ]; then
    WORK="$(realpath -m "$WORK")"
    KEEP_WORK=1
else
    WORK="$(mktemp -d /tmp/gpu_lease.XXXXXX)"
    KEEP_WORK=0
fi
mkdir -p "$WORK"
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

METHODS=${METHODS:-scratch finetune_best fusion tmu_ft tmu_release}
SEEDS=${SEEDS:-0 1}
DROP_ORDER=${DROP_ORDER:-tmu_release fusion tmu_ft}
MARGIN=${MARGIN:-1.15} # the plan's predicted time times this must fit
SPEED_COMPILE_ARGS=${SPEED_COMPILE_ARGS:---config small --compile --no-memory}
if [ "$DRY" = 1 ]; then
    # tiny targets (16x16 frames, 3 + 3 frames, 8 training sequences) at the real network size,
    # so that the builtin 2 x 32 sources are the ones read; a few iterations on the CPU
    ITERS=${ITERS:-6} MIN_ITERS=${MIN_ITERS:-4} PILOT_ITERS=${PILOT_ITERS:-2} STEP=1 JOBS=${JOBS:-2}
    SPEED_COMPILE_S=${SPEED_COMPILE_S:-0}
    DEVICE=cpu
    TARGET=(data.frame_size=16 data.input_len=3 data.total_len=6 data.train_size=8 data.val_size=2
        data.test_size=4 data.batch_size=2 eval.batch_size=4 transfer.rank_probe=2 train.log_every=1)
else
    ITERS=${ITERS:-20000} MIN_ITERS=${MIN_ITERS:-1500} PILOT_ITERS=${PILOT_ITERS:-200} STEP=100 JOBS=${JOBS:-}
    SPEED_COMPILE_S=${SPEED_COMPILE_S:-120}
    DEVICE=cuda
    TARGET=()
fi
read -r -a METHOD_LIST <<<"$METHODS"
read -r -a SEED_LIST <<<"$SEEDS"
RUNS=$((${#METHOD_LIST[@]} * ${#SEED_LIST[@]}))
if [ -z "$JOBS" ]; then JOBS=$((RUNS < 12 ? RUNS : 12)); fi # every run at once, up to 12 (16 cores)

SUMMARY="$TREE/summary.txt"
: >"$SUMMARY"
exec 3>&1 4>&2 > >(tee -a "$TREE/lease.log") 2>&1
TEE=$!

say() { echo "gpu_lease: $*"; }
note() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $((DEADLINE - $(date +%s))); }
elapsed() { echo $(($(date +%s) - START)); }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }

# phase NAME SECONDS CMD...: run CMD under timeout (a kill 10 s after), its output in NAME.log;
# records its status and duration in summary.txt; returns its status
phase() {
    local name=$1 limit=$2 started rc
    shift 2
    started=$(date +%s)
    say "== $name (at most $limit s, $(left) s left)"
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$TREE/$name.log"
    rc=${PIPESTATUS[0]}
    note "$(printf '%-16s rc %-3s %4s s%s' "$name" "$rc" "$(($(date +%s) - started))" "$([ "$rc" = 124 ] && echo ' (timed out)')")"
    return "$rc"
}

# collect BENCH_DIR NAME: the benchmark's results, pictures, ranking and each run's logs
# (not its models or checkpoints) into $TREE/NAME
collect() {
    local from=$1 to="$TREE/$2"
    [ -d "$from" ] || return 0
    mkdir -p "$to"
    (cd "$from" && find . -path ./sources -prune -o -path '*/checkpoints' -prune -o -type f \
        \( -name '*.csv' -o -name '*.json' -o -name '*.md' -o -name '*.toml' -o -name '*.png' -o -name '*.gif' \) \
        -print0 | xargs -0 -r cp --parents -t "$to")
}

MONITOR=""
finish() {
    local status=$?
    trap - EXIT
    [ -n "$MONITOR" ] && kill "$MONITOR" 2>/dev/null
    collect "$WORK/pilot" pilot
    collect "$WORK/bench" comparison
    if [ -f "$TREE/gpu_monitor.log" ]; then
        note "GPU samples: at most $(awk '{ if ($NF + 0 > m) m = $NF + 0 } END { print m + 0 }' "$TREE/gpu_monitor.log") processes on the GPU at once (gpu_monitor.log)"
    fi
    note "total $(elapsed) s of $LIMIT_S s; exit status $status"
    local best=comparison
    [ -f "$TREE/comparison/results.csv" ] || best=pilot
    exec 1>&3 2>&4 # lease.log complete before it is packed
    for _ in $(seq 50); do kill -0 "$TEE" 2>/dev/null || break; sleep 0.1; done
    cp "$TREE/summary.txt" "$OUT/summary.txt"
    [ -f "$TREE/speed.json" ] && cp "$TREE/speed.json" "$OUT/speed.json"
    for f in results.md results.csv; do [ -f "$TREE/$best/$f" ] && cp "$TREE/$best/$f" "$OUT/$f"; done
    # the lease tool brings back at most 8 files of at most 16 MiB: one archive, then the loose files
    cp "$TREE/lease.log" "$OUT/lease.log"
    tar -czf "$OUT/gpu_lease.tar.gz" -C "$OUT" gpu_lease
    if [ "$(stat -c %s "$OUT/gpu_lease.tar.gz")" -gt 15000000 ]; then
        tar -czf "$OUT/gpu_lease.tar.gz" -C "$OUT" --exclude='*.gif' --exclude='*.png' gpu_lease
    fi
    [ "${KEEP_TREE:-0}" = 1 ] || rm -rf "$TREE"
    [ "$KEEP_WORK" = 1 ] || rm -rf "$WORK"
    exit "$status"
}
trap finish EXIT

# plan PILOT_SECONDS SECONDS_AVAILABLE METHODS...: the comparison that fits, from the pilot's
# train.csv logs (each run's seconds per iteration, timed beside the others, first log row
# dropped) and its wall time (everything but training: startup, ranking, banks, evaluation,
# report). Prints each run's expected time, then a last line
# "PLAN <iterations> <needed seconds> <all methods kept at MIN_ITERS or more: 1/0> <methods...>"
# (iterations 0: nothing fits).
plan() {
    PILOT_DIR="$WORK/pilot" PILOT_WALL=$1 AVAILABLE=$2 SEEDS="$SEEDS" JOBS="$JOBS" PILOT_ITERS="$PILOT_ITERS" \
        ITERS="$ITERS" MIN_ITERS="$MIN_ITERS" STEP="$STEP" DROP_ORDER="$DROP_ORDER" MARGIN="$MARGIN" \
        "$PY" - "${@:3}" <<'EOF'
import csv, heapq, os, statistics, sys
from pathlib import Path

env = os.environ
methods, seeds = sys.argv[1:], env["SEEDS"].split()
jobs, pilot_iters, iters = int(env["JOBS"]), int(env["PILOT_ITERS"]), int(env["ITERS"])
least, step, margin = int(env["MIN_ITERS"]), int(env["STEP"]), float(env["MARGIN"])
wall, available = float(env["PILOT_WALL"]), float(env["AVAILABLE"])


def per_iteration(method, seed):
    path = Path(env["PILOT_DIR"], "runs", method, f"seed{seed}", "train.csv")
    if not path.exists():
        return None
    rows = [float(r["seconds_per_iteration"]) for r in csv.DictReader(path.open()) if r.get("seconds_per_iteration")]
    return statistics.median(rows[1:] if len(rows) > 1 else rows) if rows else None


def makespan(durations, workers):
    """The scheduler starts the costliest run first on a free worker."""
    free = [0.0] * max(1, min(workers, len(durations)))
    for d in sorted(durations, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


measured = {(m, s): per_iteration(m, s) for m in methods for s in seeds}
known = [v for v in measured.values() if v]
if not known:
    print("the pilot logged no training step: nothing to plan from")
    print("PLAN 0 0 0 " + " ".join(methods))
    sys.exit()
slowest = max(known)
rate = {k: v or slowest for k, v in measured.items()}  # a run the pilot did not time: the slowest
overhead = max(0.0, wall - makespan([pilot_iters * rate[k] for k in rate], jobs))
print(f"pilot: {wall:.0f} s for {pilot_iters} iterations; {overhead:.0f} s of it not training (start, ranking, banks, evaluation, report)")
print(f"{'run':<24} {'ms/it':>7} {'at ' + format(iters, ',') + ' it':>12}")
for (m, s), v in rate.items():
    print(f"{m + ' seed ' + s:<24} {v * 1e3:7.1f} {iters * v:10.0f} s" + ("" if measured[(m, s)] else "  (not timed: the slowest)"))


def fit(kept):
    per_it = makespan([rate[(m, s)] for m in kept for s in seeds], jobs)
    n = int((available / margin - overhead) / per_it) if per_it > 0 else iters
    n = min(iters, n // step * step)
    return n, per_it


kept = list(methods)
droppable = [m for m in env["DROP_ORDER"].split() if m in kept]
n, per_it = fit(kept)
print(f"all {len(kept) * len(seeds)} runs, {jobs} at once: {overhead + iters * per_it:.0f} s at {iters:,} iterations; "
      f"{available:.0f} s available / margin {margin} -> {max(n, 0):,} iterations fit")
while n < least and droppable:
    dropped = droppable.pop(0)
    kept.remove(dropped)
    n, per_it = fit(kept)
    print(f"below {least:,} iterations: drop {dropped} -> {max(n, 0):,} iterations fit")
if n < 2 * pilot_iters:
    print(f"not even {2 * pilot_iters} iterations fit: the pilot's results are the comparison")
    n = 0
need = overhead + n * per_it
print(f"PLAN {n} {need:.0f} {int(len(kept) == len(methods) and n >= least)} " + " ".join(kept))
EOF
}

# benchmark DIR ITERATIONS SECONDS METHODS...: the comparison, every target at ITERATIONS
benchmark() {
    local dir=$1 n=$2 limit=$3 name every
    shift 3
    every=$((n / 10 / STEP * STEP))
    [ "$every" -ge 1 ] || every=$n
    name=$([ "$dir" = "$WORK/pilot" ] && echo pilot || echo comparison)
    local args=()
    for setting in "${TARGET[@]}"; do args+=(--target-set "$setting"); done
    phase "$name" "$limit" "$PY" -m transmem benchmark digits --profile full --zoo builtin --budget iterations \
        --methods "$@" --seeds "${SEED_LIST[@]}" --jobs "$JOBS" "${args[@]}" \
        --target-set "train.iterations=$n" --target-set "train.val_every=$every" \
        --target-set "train.checkpoint_every=$every" --target-set "train.device=$DEVICE" \
        --no-progress --out "$dir"
}

# ----------------------------------------------------------------------------- the plan
note "gpu_lease $([ "$DRY" = 1 ] && echo '--dry-run (CPU, tiny shapes)' || echo '(CUDA)'), $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), limit $LIMIT_S s"
note "plan: 1 install + device check; 2 pilot: ${METHOD_LIST[*]} x seeds ${SEED_LIST[*]} ($RUNS runs, --jobs $JOBS) at $PILOT_ITERS iterations, timed;"
note "      3 CUDA tests (<= 120 s); 4 transmem speed, every option but compile (<= 150 s);"
note "      5 the comparison at $ITERS iterations or what the pilot's steps fit in the time left less ${SPEED_COMPILE_S} s"
note "        (below $MIN_ITERS iterations, drop in turn: $DROP_ORDER; then the ${SPEED_COMPILE_S} s too); 6 transmem speed --compile in the rest"

# ----------------------------------------------------------------------------- 1. install, device
say "== install and device check"
if compgen -G ".whl/*.whl" >/dev/null; then
    mapfile -t MISSING < <("$PY" - .whl/*.whl <<'EOF'
import importlib.metadata as metadata, sys
for path in sys.argv[1:]:
    name = path.rsplit("/", 1)[-1].split("-")[0]
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        print(path)
EOF
    )
    if [ "${#MISSING[@]}" -gt 0 ]; then
        say "installing ${MISSING[*]} into /tmp/transmem-site"
        "$PY" -m pip install -q --no-index --find-links .whl --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/transmem-site "${MISSING[@]}" 2>&1 | tee "$TREE/install.log"
        export PYTHONPATH="$PYTHONPATH:/tmp/transmem-site"
    else
        say "every wheel in .whl/ is installed already"
    fi
fi
"$PY" - "$DEVICE" <<'EOF' 2>&1 | tee "$TREE/device.txt"
import importlib.util, platform, sys
import torch, transmem
missing = [m for m in ("tomli_w", "safetensors", "torchmetrics", "matplotlib", "imageio", "scipy", "mlxtend") if importlib.util.find_spec(m) is None]
print(f"python {platform.python_version()}, torch {torch.__version__}, transmem from {transmem.__file__}")
if torch.cuda.is_available():
    print(f"CUDA {torch.version.cuda}: {torch.cuda.get_device_name()} ({torch.cuda.device_count()} device(s))")
if missing:
    sys.exit(f"missing: {', '.join(missing)} (bring wheels in .whl/, see docs/speed.md)")
if sys.argv[1] == "cuda" and not torch.cuda.is_available():
    sys.exit("no CUDA device (use --dry-run on a CPU)")
EOF
[ "${PIPESTATUS[0]}" = 0 ] || { note "device check failed (device.txt)"; exit 2; }
if [ "$DRY" = 0 ] && command -v nvidia-smi >/dev/null; then
    nvidia-smi >"$TREE/nvidia-smi.txt" 2>&1
    (while :; do
        echo "$(date +%T) $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader | tr '\n' ' ')procs $(nvidia-smi --query-compute-apps=pid --format=csv,noheader | grep -c .)"
        sleep 5
    done) >"$TREE/gpu_monitor.log" 2>&1 &
    MONITOR=$!
fi

# ----------------------------------------------------------------------------- 2. pilot, the plan
pilot_started=$(date +%s)
benchmark "$WORK/pilot" "$PILOT_ITERS" "$(min 180 $(($(left) - PACK_S)))" "${METHOD_LIST[@]}"
pilot_rc=$?
PILOT_WALL=$(($(date +%s) - pilot_started))
kept=("${METHOD_LIST[@]}")
if [ "$pilot_rc" != 0 ]; then
    failed=$(grep -oE '^[a-z_0-9]+ seed [0-9]+ failed' "$TREE/pilot.log" | head -1 | cut -d' ' -f1)
    if [ -n "$failed" ] && [ "$failed" != scratch ]; then
        note "the pilot failed in $failed: the comparison goes on without it"
        kept=()
        for m in "${METHOD_LIST[@]}"; do [ "$m" = "$failed" ] || kept+=("$m"); done
    else
        note "the pilot failed (pilot.log): no comparison"
        kept=()
    fi
fi
if [ "${#kept[@]}" -gt 0 ]; then
    say "== the plan, if steps 3 and 4 take their longest"
    plan "$PILOT_WALL" $(($(left) - 120 - 150 - SPEED_COMPILE_S - PACK_S)) "${kept[@]}" | tee "$TREE/plan_first.txt"
fi

# ----------------------------------------------------------------------------- 3. CUDA tests
if [ "$DRY" = 1 ]; then
    note "cuda_tests       skipped (dry run): $(grep -l 'mark.cuda' tests/test_*.py | tr '\n' ' ')"
else
    mapfile -t CUDA_TESTS < <(grep -l 'mark.cuda' tests/test_*.py)
    phase cuda_tests "$(min 120 $(($(left) - PACK_S)))" "$PY" -m pytest -q -m cuda -p no:cacheprovider "${CUDA_TESTS[@]}"
fi

# ----------------------------------------------------------------------------- 4. speed
if [ "$DRY" = 1 ]; then
    phase speed 120 "$PY" -m transmem speed --tiny --quick --device cpu --precision bf16 --channels-last --no-memory \
        --json "$TREE/speed.json"
else
    phase speed "$(min 150 $(($(left) - PACK_S)))" "$PY" -m transmem speed --device cuda --config both --quick \
        --cuda-graph --channels-last --precision bf16 --json "$TREE/speed.json"
fi

# ----------------------------------------------------------------------------- 5. the comparison
if [ "${#kept[@]}" -gt 0 ]; then
    say "== the plan in the time left ($(left) s)"
    compile_s=$SPEED_COMPILE_S
    plan "$PILOT_WALL" $(($(left) - compile_s - PACK_S)) "${kept[@]}" >"$WORK/plan.txt"
    read -r _ n need whole rest < <(tail -1 "$WORK/plan.txt")
    n=${n:-0}
    if [ "$whole" != 1 ] && [ "$compile_s" -gt 0 ]; then # the compile timing goes before any method
        compile_s=0
        plan "$PILOT_WALL" $(($(left) - PACK_S)) "${kept[@]}" >"$WORK/plan.txt"
        read -r _ n need whole rest < <(tail -1 "$WORK/plan.txt")
        echo "the compile timing is dropped: its ${SPEED_COMPILE_S} s go to the comparison" >>"$WORK/plan.txt"
    fi
    tee "$TREE/plan.txt" <"$WORK/plan.txt"
    read -r -a kept <<<"$rest"
    if [ "$n" -gt 0 ]; then
        note "comparison: ${kept[*]} x seeds ${SEED_LIST[*]} at $n iterations, --jobs $JOBS, about $need s expected"
        benchmark "$WORK/bench" "$n" $(($(left) - compile_s - PACK_S)) "${kept[@]}"
    else
        note "comparison: nothing fits after the pilot; results.csv is the pilot's"
    fi
fi

# ----------------------------------------------------------------------------- 6. speed --compile
if [ "$DRY" = 1 ]; then
    note "speed_compile    skipped (dry run: torch.compile takes minutes on the CPU)"
elif [ $(($(left) - PACK_S)) -ge 45 ]; then
    read -r -a compile_args <<<"$SPEED_COMPILE_ARGS"
    phase speed_compile $(($(left) - PACK_S)) "$PY" -m transmem speed --device cuda --quick "${compile_args[@]}" \
        --json "$TREE/speed_compile.json"
else
    note "speed_compile    skipped: $(left) s left"
fi
