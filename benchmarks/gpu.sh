#!/usr/bin/env bash
# All benchmarks on CUDA, for a machine that has one; about 5 minutes. Prints one JSON document per script.
# Usage: FACEID_FACES_DIR=/path/to/faces benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export TORCH_HOME=${TORCH_HOME:-$PWD/.torch}
export FACEID_DEVICE=cuda
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
$PY -m model.weights fetch
$PY -m benchmarks.embed --device cuda --precision fast --seconds 3 --batches 1,16,64,256
$PY -m benchmarks.search --sizes 10000,100000,1000000 --queries 50
$PY -m benchmarks.detect --device cuda --precision fast --repeats 2
$PY -m benchmarks.serve --seconds 8 --clients 1,4,16
$PY -m benchmarks.lfw --precision fast
