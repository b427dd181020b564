#!/usr/bin/env bash
# The prepared GPU check (ddad/tools/gpu_check.py): run from the repository root with ddad's
# requirements installed, e.g. `scripts/gpu_check.sh` on a machine with one CUDA GPU, or
# `scripts/gpu_check.sh --device cpu --quick` to try it on a CPU. Prints the JSON's path last.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m ddad.tools.gpu_check "$@"
