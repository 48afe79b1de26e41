#!/usr/bin/env bash
# All benchmarks on CUDA, for a machine that has one; about 10 minutes. Prints one JSON document per script.
# Covers the detector backends (PyTorch on CUDA; ONNX Runtime vs PyTorch on that machine's CPU) and the
# int8 embedder (CPU only: ONNX Runtime), besides the CUDA figures.
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
# FACEID_DETECTOR_BACKEND=auto picks torch on CUDA; onnxruntime runs on CPU only
$PY -m benchmarks.detect --device cuda --backends torch --detector-backend torch --precision fast --repeats 2
$PY -m benchmarks.detect --device cpu --backends torch,onnxruntime --sets photos_640 --no-breakdown --repeats 2
$PY -m benchmarks.serve --seconds 8 --clients 1,4,16
# a request's own overhead (Server-Timing breakdown) and facenet-pytorch's loop, photo by photo
$PY -m benchmarks.overhead --device cuda --passes 1 --lfw 20
$PY -m benchmarks.serve --seconds 8 --clients 1,16 --configs \
  "cuda=FACEID_DEVICE=cuda;cpu_torch=FACEID_DEVICE=cpu,FACEID_DETECTOR_BACKEND=torch;cpu_onnxruntime=FACEID_DEVICE=cpu,FACEID_DETECTOR_BACKEND=onnxruntime"
# int8 embedder (CPU, ONNX Runtime): built and gated once (cached), then speed and accuracy against fp32
$PY -m benchmarks.embed --device cpu --precision int8 --seconds 3 --batches 1,16,64
$PY -m benchmarks.large --photos 8 --repeats 2
$PY -m benchmarks.lfw --precision fast
