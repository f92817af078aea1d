#!/usr/bin/env bash
# The prepared GPU check (benchmarks/scripts/device_check.py) from a bare checkout: no install, no network.
#
#   bash benchmarks/scripts/device_check.sh --prepare      where pip reaches PyPI: the wheels the GPU machine lacks, in .whl/
#   bash benchmarks/scripts/device_check.sh [OPTIONS]      on the GPU machine (python3 with PyTorch and ONNX Runtime)
#
# The run lays the package out as the wheel installs it (the stage folders inside poet/) in a temporary folder,
# adds the wheels of .whl/ if any, and writes device_check.json into $OUT (or the current folder) unless OPTIONS
# name --output. OPTIONS are device_check's (python benchmarks/scripts/device_check.py --help). It stops after
# 8 minutes at most.
set -euo pipefail
cd "$(dirname "$0")/../.."
# What the GPU image lacks of poet-edge's needs (it has torch, onnx, onnxruntime, cuda-python, OpenCV, tqdm).
CARRIED_WHEELS=("onnxslim==0.1.98")
if [ "${1:-}" = "--prepare" ]; then
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest .whl "${CARRIED_WHEELS[@]}"
  ls .whl
  exit 0
fi
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
cp -r poet "$site/poet"
for stage in train optimize runtime benchmarks; do
  cp -r "$stage" "$site/poet/$stage"
done
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install --quiet --no-index --no-deps --no-compile --target "$site" .whl/*.whl
fi
output=()
case " $* " in
  *" --output "*) ;;
  *) output=(--output "${OUT:-.}/device_check.json") ;;
esac
PYTHONPATH="$site" timeout 480 python3 benchmarks/scripts/device_check.py "${output[@]}" "$@"
