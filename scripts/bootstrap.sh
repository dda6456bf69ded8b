#!/usr/bin/env bash
# Set up bfdkern on a fresh machine: torch, the system tools the tests use, and an editable
# install that compiles the C++ (and, with a CUDA torch and toolkit, the CUDA) extension.
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# torch: keep an existing install (a GPU box's own CUDA torch); else the pinned CPU-capable build.
if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
    "$PY" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi

# ExifTool is the independent oracle of the EXIF tests (Debian package).
if ! command -v exiftool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq libimage-exiftool-perl >/dev/null) \
        || echo "bootstrap: could not install exiftool; the ExifTool oracle test will skip" >&2
fi

# --no-build-isolation: compile against the torch installed above, not a second copy.
export MAX_JOBS=${MAX_JOBS:-2}
"$PY" -m pip install -q --no-build-isolation -e ".[test]"
