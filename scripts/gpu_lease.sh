#!/usr/bin/env bash
# One command that makes a short GPU lease count. It ends within LIMIT_S (default 525 s, under
# the 9 minutes of one lease command): it installs what the machine lacks, runs the CUDA tests
# and `transmem speed` on CUDA with every fast-path option, then the long-budget `digits`
# comparison of scratch, finetune_best, fusion, tmu_ft and tmu_release at the full profile's
# network size (2 x 32) from the builtin sources, many small trainings at once on the one GPU.
#
#   bash scripts/gpu_lease.sh              # on the GPU machine (OUT defaults to gpu_lease/)
#   bash scripts/gpu_lease.sh --dry-run    # the same plan on the CPU at tiny shapes (under a minute)
#
# The steps, each under `timeout` within the one deadline:
#  1. wheels in .whl/ whose distribution is not installed go to /tmp/transmem-site
#     (pip --no-index --no-deps); transmem runs from src/ (PYTHONPATH), nothing is built.
#  2. prepare: the source ranking and tmu_ft's memory bank, computed once (a 1-iteration
#     finetune_best and tmu_ft) and copied into the pilot's and the comparison's folders, so
#     that every run of those starts training at once.
#  3. pilot: the whole comparison (same methods, seeds and --jobs) at PILOT_ITERS (200) target
#     iterations. Its train.csv logs time each run's steps while the others train beside it,
#     and it tries the whole pipeline before the long run. The plan printed from it gives each
#     run's ms per iteration and its expected time at ITERS (20,000) iterations.
#  4. the CUDA tests (pytest -m cuda on the test files that have such tests), at most 120 s.
#  5. transmem speed --device cuda --config both --quick --cuda-graph --channels-last
#     --precision bf16 -> speed.json, at most 150 s.
#  6. the comparison: ITERS target iterations, or as many as the pilot's steps say fit (times
#     MARGIN, 1.15) in the time left less SPEED_COMPILE_S (120 s, kept for step 7, and taken if
#     the comparison runs late). Below MIN_ITERS (1500, the full profile's) those seconds go
#     to it first, then methods are dropped in the order of DROP_ORDER (tmu_release, fusion,
#     tmu_ft; never scratch or finetune_best, never a seed). Targets train with
#     train.device=cuda, so a worker that cannot reach the GPU fails instead of training on
#     the CPU. nvidia-smi is sampled every 5 s (gpu_monitor.log: how many processes were on
#     the GPU at once).
#  7. transmem speed --device cuda --quick SPEED_COMPILE_ARGS (--config small --compile
#     --no-memory: torch.compile on the benchmark's network) -> speed_compile.json, in the rest.
#
# $OUT gets at most 8 files (what the lease tool brings back): gpu_lease.tar.gz (everything:
# logs, plans, speed JSONs, the pilot's and the comparison's results.*, comparison.csv,
# pictures, ranking, each run's train.csv, val.csv, metrics.json and config.toml, the GPU
# samples), and loose summary.txt, lease.log, speed.json, results.md and results.csv (the
# comparison's, else the pilot's). KEEP_TREE=1 keeps the unpacked $OUT/gpu_lease/ too. The
# benchmark folders (models, checkpoints) go to WORK (default: a temporary folder, removed at
# the end). Exit status: 0 if every step ran, 1 if one failed or timed out, 2 if the machine
# cannot run transmem.
#
# Settings (environment): OUT, WORK, PYTHON, LIMIT_S, ITERS, MIN_ITERS, PILOT_ITERS, SEEDS
# ("0 1"), METHODS, DROP_ORDER, JOBS (default: every run at once, at most 12; 1 in --dry-run),
# SPEED_COMPILE_S, SPEED_COMPILE_ARGS, MARGIN (1.15: the plan's time times this must fit),
# KEEP_TREE. The wheels to carry: docs/speed.md.
set -uo pipefail

DRY=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY=1 ;;
        -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_lease: unknown argument $arg (--dry-run, --help)" >&2; exit 2 ;;
    esac
done

START=$(date +%s)
LIMIT_S=${LIMIT_S:-525}
DEADLINE=$((START + LIMIT_S))
PACK_S=20 # kept at the end to collect and pack
OUT="$(realpath -m "${OUT:-gpu_lease}")" # relative to where it is called from
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
TREE="$OUT/gpu_lease"
rm -rf "$TREE" "$OUT"/{gpu_lease.tar.gz,summary.txt,lease.log,speed.json,results.md,results.csv} # an earlier run's
mkdir -p "$TREE" || exit 2
if [ -n "${WORK:-}" ]; then
    WORK="$(realpath -m "$WORK")" KEEP_WORK=1
else
    WORK="$(mktemp -d /tmp/gpu_lease.XXXXXX)" KEEP_WORK=0
fi
mkdir -p "$WORK" || exit 2
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

METHODS=${METHODS:-scratch finetune_best fusion tmu_ft tmu_release}
SEEDS=${SEEDS:-0 1}
DROP_ORDER=${DROP_ORDER:-tmu_release fusion tmu_ft}
MARGIN=${MARGIN:-1.15}
SPEED_COMPILE_ARGS=${SPEED_COMPILE_ARGS:---config small --compile --no-memory}
if [ "$DRY" = 1 ]; then
    # tiny targets (16x16 frames, 3 + 3 frames, 8 training sequences) at the real network size,
    # so that the builtin 2 x 32 sources are read as on the GPU; a few iterations on the CPU
    ITERS=${ITERS:-6} MIN_ITERS=${MIN_ITERS:-4} PILOT_ITERS=${PILOT_ITERS:-2} STEP=1 CHECKPOINT=2 JOBS=${JOBS:-1}
    SPEED_COMPILE_S=${SPEED_COMPILE_S:-0} DEVICE=cpu
    TARGET=(data.frame_size=16 data.input_len=3 data.total_len=6 data.train_size=8 data.val_size=2
        data.test_size=4 data.batch_size=2 eval.batch_size=4 transfer.rank_probe=2 train.log_every=1)
else
    # CHECKPOINT is the same in every pass (at least transfer.rank_probe): the ranking's key then matches
    ITERS=${ITERS:-20000} MIN_ITERS=${MIN_ITERS:-1500} PILOT_ITERS=${PILOT_ITERS:-200} STEP=100 CHECKPOINT=500 JOBS=${JOBS:-}
    SPEED_COMPILE_S=${SPEED_COMPILE_S:-120} DEVICE=cuda
    TARGET=()
fi
read -r -a METHOD_LIST <<<"$METHODS"
read -r -a SEED_LIST <<<"$SEEDS"
RUNS=$((${#METHOD_LIST[@]} * ${#SEED_LIST[@]}))
if [ -z "$JOBS" ]; then JOBS=$((RUNS < 12 ? RUNS : 12)); fi

SUMMARY="$TREE/summary.txt"
: >"$SUMMARY"
exec 3>&1 4>&2 > >(tee -a "$TREE/lease.log") 2>&1
TEE=$!
STATUS=0

say() { echo "gpu_lease: $*"; }
note() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $((DEADLINE - $(date +%s))); }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }

# phase NAME SECONDS CMD...: CMD under timeout (killed 10 s after), its output in NAME.log, its
# status and duration in summary.txt; returns its status
phase() {
    local name=$1 limit=$2 started rc
    shift 2
    started=$(date +%s)
    say "== $name (at most $limit s, $(left) s left)"
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$TREE/$name.log"
    rc=${PIPESTATUS[0]}
    note "$(printf '%-14s rc %-3s %4s s' "$name" "$rc" "$(($(date +%s) - started))")$([ "$rc" = 124 ] && echo ' (timed out)')"
    [ "$rc" = 0 ] || STATUS=1
    return "$rc"
}

# benchmark NAME ITERATIONS SECONDS JOBS "SEEDS" METHODS...: the digits comparison into
# $WORK/NAME, every target at ITERATIONS, validated 10 times (and at the end)
benchmark() {
    local name=$1 n=$2 limit=$3 jobs=$4 seeds every setting args=()
    read -r -a seeds <<<"$5"
    shift 5
    every=$((n / 10 / STEP * STEP))
    [ "$every" -ge 1 ] || every=$n
    for setting in "${TARGET[@]}"; do args+=(--target-set "$setting"); done
    phase "$name" "$limit" "$PY" -m transmem benchmark digits --profile full --zoo builtin --budget iterations \
        --methods "$@" --seeds "${seeds[@]}" --jobs "$jobs" "${args[@]}" \
        --target-set "train.iterations=$n" --target-set "train.val_every=$every" \
        --target-set "train.checkpoint_every=$CHECKPOINT" --target-set "train.device=$DEVICE" \
        --no-progress --out "$WORK/$name"
}

# collect NAME: a benchmark's results, pictures, ranking and each run's logs (not its models
# or checkpoints) from $WORK/NAME into $TREE/NAME
# shellcheck disable=SC2317 # run by finish
collect() {
    [ -d "$WORK/$1" ] || return 0
    mkdir -p "$TREE/$1"
    (cd "$WORK/$1" && find . -path '*/checkpoints' -prune -o -type f \
        \( -name '*.csv' -o -name '*.json' -o -name '*.md' -o -name '*.toml' -o -name '*.png' -o -name '*.gif' \) \
        -print0 | xargs -0 -r cp --parents -t "$TREE/$1")
}

MONITOR=""
# shellcheck disable=SC2317 # run by the EXIT trap
finish() {
    local status=$? best=comparison name
    trap - EXIT
    [ -n "$MONITOR" ] && kill "$MONITOR" 2>/dev/null
    for name in prepare pilot comparison; do collect "$name"; done
    if [ -f "$TREE/gpu_monitor.log" ]; then
        note "GPU samples: at most $(awk '$NF + 0 > m { m = $NF + 0 } END { print m + 0 }' "$TREE/gpu_monitor.log") processes on the GPU at once (gpu_monitor.log)"
    fi
    note "total $(($(date +%s) - START)) s of $LIMIT_S s; exit status $status"
    [ -f "$TREE/comparison/results.csv" ] || best=pilot
    exec 1>&3 2>&4 # lease.log is complete before it is packed
    for _ in $(seq 50); do kill -0 "$TEE" 2>/dev/null || break; sleep 0.1; done
    # the lease tool brings back at most 8 files of at most 16 MiB: one archive, and the main files loose
    cp "$TREE/summary.txt" "$TREE/lease.log" "$OUT/"
    [ -f "$TREE/speed.json" ] && cp "$TREE/speed.json" "$OUT/"
    for name in results.md results.csv; do [ -f "$TREE/$best/$name" ] && cp "$TREE/$best/$name" "$OUT/"; done
    tar -czf "$OUT/gpu_lease.tar.gz" -C "$OUT" gpu_lease
    if [ "$(stat -c %s "$OUT/gpu_lease.tar.gz")" -gt 15000000 ]; then
        tar -czf "$OUT/gpu_lease.tar.gz" -C "$OUT" --exclude='*.gif' --exclude='*.png' gpu_lease
    fi
    [ "${KEEP_TREE:-0}" = 1 ] || rm -rf "$TREE"
    [ "$KEEP_WORK" = 1 ] || rm -rf "$WORK"
    exit "$status"
}
trap finish EXIT

# plan PILOT_SECONDS SECONDS_AVAILABLE METHODS...: the comparison that fits in SECONDS_AVAILABLE,
# from the pilot: each run's mean seconds per iteration in its train.csv (the first logged
# window, with its warm-up, left out), and its wall time less its training (start, banks,
# evaluation, report: the part that does not grow with the iterations). Prints each run's
# expected time, then "PLAN <iterations, 0: none> <seconds expected> <1: every method at
# MIN_ITERS or more, else 0> <methods kept...>".
plan() {
    PILOT_DIR="$WORK/pilot" PILOT_WALL=$1 AVAILABLE=$2 SEEDS="$SEEDS" JOBS="$JOBS" PILOT_ITERS="$PILOT_ITERS" \
        ITERS="$ITERS" MIN_ITERS="$MIN_ITERS" STEP="$STEP" DROP_ORDER="$DROP_ORDER" MARGIN="$MARGIN" \
        "$PY" - "${@:3}" <<'EOF'
import csv, heapq, os, sys
from pathlib import Path

env = os.environ
methods, seeds = sys.argv[1:], env["SEEDS"].split()
jobs, pilot_iters, iters = int(env["JOBS"]), int(env["PILOT_ITERS"]), int(env["ITERS"])
least, step, margin = int(env["MIN_ITERS"]), int(env["STEP"]), float(env["MARGIN"])
wall, available = float(env["PILOT_WALL"]), float(env["AVAILABLE"])


def per_iteration(method, seed):
    path = Path(env["PILOT_DIR"], "runs", method, f"seed{seed}", "train.csv")
    rows, last = [], 0
    for row in csv.DictReader(path.open()) if path.exists() else []:
        rows.append((int(row["iteration"]) - last, float(row["seconds_per_iteration"])))
        last = int(row["iteration"])
    rows = rows[1:] or rows
    return sum(n * s for n, s in rows) / sum(n for n, _ in rows) if rows else None


def makespan(durations, workers):
    """As the scheduler runs them: the costliest first, on the first free worker."""
    free = [0.0] * max(1, min(workers, len(durations)))
    for d in sorted(durations, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


measured = {(m, s): per_iteration(m, s) for m in methods for s in seeds}
if not any(measured.values()):
    print("the pilot logged no training step: nothing to plan from")
    print("PLAN 0 0 0 " + " ".join(methods))
    sys.exit()
rate = {k: v or max(filter(None, measured.values())) for k, v in measured.items()}  # untimed: the slowest
fixed = max(0.0, wall - makespan([pilot_iters * v for v in rate.values()], jobs))


def fit(kept):
    per_it = makespan([rate[(m, s)] for m in kept for s in seeds], jobs)
    n = int((available / margin - fixed) / per_it) if per_it > 0 else iters
    return max(0, min(iters, n // step * step)), per_it


kept, lines = list(methods), []
droppable = [m for m in env["DROP_ORDER"].split() if m in kept]
n, per_it = fit(kept)
lines.append(f"{len(kept) * len(seeds)} runs, {jobs} at once: about {fixed + iters * per_it:.0f} s at {iters:,} iterations; "
             f"{available:.0f} s available / margin {margin}: {n:,} iterations fit")
while n < least and droppable:
    dropped = droppable.pop(0)
    kept.remove(dropped)
    n, per_it = fit(kept)
    lines.append(f"below {least:,} iterations: drop {dropped}: {n:,} iterations fit")
if n < 2 * pilot_iters:
    lines.append(f"not even {2 * pilot_iters} iterations fit: the pilot's results stand for the comparison")
    n = 0
print(f"pilot: {wall:.0f} s at {pilot_iters} iterations, {fixed:.0f} s of it not training (start, banks, evaluation, report)")
print(f"{'run':<22} {'ms/it':>7} {'at ' + format(iters, ',') + ' it':>12} {'at ' + format(n, ',') + ' it':>11}")
for (m, s), v in rate.items():
    at_n = f"{n * v:9.0f} s" if m in kept and n else f"{'-':>11}"
    print(f"{m + ' seed ' + s:<22} {v * 1e3:7.1f} {iters * v:10.0f} s {at_n}" + ("" if measured[(m, s)] else "  (untimed: the slowest)"))
print("\n".join(lines))
print(f"PLAN {n} {fixed + n * per_it:.0f} {int(len(kept) == len(methods) and n >= least)} " + " ".join(kept))
EOF
}

# ----------------------------------------------------------------------------- the plan
note "gpu_lease $([ "$DRY" = 1 ] && echo '--dry-run (CPU, tiny shapes)' || echo '(CUDA)'), $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), limit $LIMIT_S s"
note "plan: 1 install; 2 prepare: ranking and memory bank; 3 pilot: ${METHOD_LIST[*]} x seeds ${SEED_LIST[*]}"
note "      ($RUNS runs, --jobs $JOBS) at $PILOT_ITERS iterations, timed; 4 CUDA tests (<= 120 s); 5 transmem speed,"
note "      every option but compile (<= 150 s); 6 the comparison at $ITERS iterations or what fits in the time left"
note "      less ${SPEED_COMPILE_S} s (below $MIN_ITERS: those s first, then drop $DROP_ORDER in turn); 7 speed --compile"

# ----------------------------------------------------------------------------- 1. install, device
say "== install and device check"
if compgen -G ".whl/*.whl" >/dev/null; then
    mapfile -t MISSING < <("$PY" - .whl/*.whl <<'EOF'
import importlib.metadata as metadata, sys
for path in sys.argv[1:]:
    try:
        metadata.version(path.rsplit("/", 1)[-1].split("-")[0])
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
needed = ("tomli_w", "safetensors", "torchmetrics", "matplotlib", "imageio", "scipy", "mlxtend")
missing = [name for name in needed if importlib.util.find_spec(name) is None]
print(f"python {platform.python_version()}, torch {torch.__version__}, transmem from {transmem.__file__}")
if torch.cuda.is_available():
    print(f"CUDA {torch.version.cuda}: {torch.cuda.get_device_name()} ({torch.cuda.device_count()} device(s))")
if missing:
    sys.exit(f"missing: {', '.join(missing)} (carry their wheels in .whl/, see docs/speed.md)")
if sys.argv[1] == "cuda" and not torch.cuda.is_available():
    sys.exit("no CUDA device here (--dry-run runs on the CPU)")
EOF
[ "${PIPESTATUS[0]}" = 0 ] || { note "device check failed (device.txt)"; exit 2; }
if [ "$DRY" = 0 ] && command -v nvidia-smi >/dev/null; then
    nvidia-smi >"$TREE/nvidia-smi.txt" 2>&1
    while :; do
        echo "$(date +%T) $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader | tr '\n' ' ')procs $(nvidia-smi --query-compute-apps=pid --format=csv,noheader | grep -c .)"
        sleep 5
    done >"$TREE/gpu_monitor.log" 2>&1 &
    MONITOR=$!
fi

# ----------------------------------------------------------------------------- 2. prepare, 3. pilot
kept=("${METHOD_LIST[@]}")
share_banks() { # the ranking and memory banks of prepare (finished, only read) into benchmark folder $1, hard-linked
    [ -d "$WORK/prepare/memory_bank" ] || return 0
    mkdir -p "$WORK/$1" && { cp -rl "$WORK/prepare/memory_bank" "$WORK/$1/" 2>/dev/null || cp -r "$WORK/prepare/memory_bank" "$WORK/$1/"; }
}
readers=()
for m in finetune_best tmu_ft fusion; do [[ " $METHODS " == *" $m "* ]] && readers+=("$m"); done
[ "${#readers[@]}" -gt 0 ] && benchmark prepare 1 "$(min 120 $(($(left) - PACK_S)))" 1 "${SEED_LIST[0]}" "${readers[@]:0:2}"
share_banks pilot
pilot_started=$(date +%s)
if ! benchmark pilot "$PILOT_ITERS" "$(min 180 $(($(left) - PACK_S)))" "$JOBS" "$SEEDS" "${METHOD_LIST[@]}"; then
    failed=$(grep -oE '^[a-z_0-9]+ seed [0-9]+ failed' "$TREE/pilot.log" | head -1 | cut -d' ' -f1)
    kept=()
    if [ -n "$failed" ] && [ "$failed" != scratch ]; then
        note "the pilot failed in $failed: the comparison goes on without it"
        for m in "${METHOD_LIST[@]}"; do [ "$m" = "$failed" ] || kept+=("$m"); done
    else
        note "the pilot failed (pilot.log): no comparison"
    fi
fi
PILOT_WALL=$(($(date +%s) - pilot_started))
if [ "${#kept[@]}" -gt 0 ]; then
    say "== the plan, if steps 4 and 5 take their longest"
    plan "$PILOT_WALL" $(($(left) - 120 - 150 - SPEED_COMPILE_S - PACK_S)) "${kept[@]}" | tee "$TREE/plan_first.txt"
fi

# ----------------------------------------------------------------------------- 4. CUDA tests
mapfile -t CUDA_TESTS < <(grep -l 'mark.cuda' tests/test_*.py)
if [ "$DRY" = 1 ]; then
    note "cuda_tests     skipped (dry run): ${CUDA_TESTS[*]}"
else
    phase cuda_tests "$(min 120 $(($(left) - PACK_S)))" "$PY" -m pytest -q -m cuda -p no:cacheprovider "${CUDA_TESTS[@]}"
fi

# ----------------------------------------------------------------------------- 5. speed
if [ "$DRY" = 1 ]; then
    phase speed "$(min 120 $(($(left) - PACK_S)))" "$PY" -m transmem speed --tiny --quick --device cpu \
        --precision bf16 --channels-last --no-memory --json "$TREE/speed.json"
else
    phase speed "$(min 150 $(($(left) - PACK_S)))" "$PY" -m transmem speed --device cuda --config both --quick \
        --cuda-graph --channels-last --precision bf16 --json "$TREE/speed.json"
fi

# ----------------------------------------------------------------------------- 6. the comparison
compile_s=$SPEED_COMPILE_S
if [ "${#kept[@]}" -gt 0 ]; then
    say "== the plan in the time left ($(left) s)"
    plan "$PILOT_WALL" $(($(left) - compile_s - PACK_S)) "${kept[@]}" >"$WORK/plan.txt"
    read -r _ n need whole rest < <(tail -1 "$WORK/plan.txt")
    if [ "${whole:-0}" != 1 ] && [ "$compile_s" -gt 0 ]; then # the compile timing goes before any method
        compile_s=0
        echo "the compile timing is dropped: its ${SPEED_COMPILE_S} s go to the comparison" >"$WORK/plan.txt"
        plan "$PILOT_WALL" $(($(left) - PACK_S)) "${kept[@]}" >>"$WORK/plan.txt"
        read -r _ n need whole rest < <(tail -1 "$WORK/plan.txt")
    fi
    tee "$TREE/plan.txt" <"$WORK/plan.txt"
    read -r -a kept <<<"${rest:-}"
    if [ "${n:-0}" -gt 0 ]; then
        note "comparison: ${kept[*]} x seeds ${SEED_LIST[*]} at $n iterations, --jobs $JOBS, about $need s expected"
        share_banks comparison
        # planned to end SPEED_COMPILE_S early; stopped only where it would leave none for packing
        benchmark comparison "$n" $(($(left) - PACK_S)) "$JOBS" "$SEEDS" "${kept[@]}"
    else
        note "comparison: nothing fits after the pilot; results.csv is the pilot's"
    fi
fi

# ----------------------------------------------------------------------------- 7. speed --compile
if [ "$DRY" = 1 ]; then
    note "speed_compile  skipped (dry run: torch.compile takes minutes on the CPU)"
elif [ "$compile_s" -gt 0 ] && [ $(($(left) - PACK_S)) -ge 45 ]; then
    read -r -a compile_args <<<"$SPEED_COMPILE_ARGS"
    phase speed_compile $(($(left) - PACK_S)) "$PY" -m transmem speed --device cuda --quick "${compile_args[@]}" \
        --json "$TREE/speed_compile.json"
else
    note "speed_compile  skipped ($(left) s left)"
fi
exit "$STATUS"
