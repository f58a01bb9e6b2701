#!/usr/bin/env bash
# Installs Label Studio into a venv of its own, cached outside the clone so a clean clone
# (and CI with a persistent $HOME or $LABELLOOP_CACHE) reuses it. Idempotent: a finished
# install leaves a stamp and the next run returns at once. Prints the venv's python path last.
#
# Label Studio pins Django and dozens of other packages that must not meet labelloop's own
# environment, hence the separate venv. The install takes about 5 minutes from PyPI.
set -euo pipefail
LS_VERSION="${LABEL_STUDIO_VERSION:-1.23.2}"
PYTHON="${PYTHON:-python3}"
CACHE="${LABELLOOP_CACHE:-$HOME/.cache/labelloop}"
VENV="$CACHE/label-studio-$LS_VERSION"
STAMP="$VENV/.installed"
if [[ -f "$STAMP" ]]; then
    echo "$VENV/bin/python"
    exit 0
fi
mkdir -p "$CACHE"
start=$(date +%s)
echo "installing label-studio==$LS_VERSION into $VENV (about 5 minutes)" >&2
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
"$VENV/bin/python" -m pip install --quiet "label-studio==$LS_VERSION" >&2
"$VENV/bin/python" -c "import label_studio; print('label-studio', label_studio.__version__)" >&2
touch "$STAMP"
echo "label-studio installed in $(( $(date +%s) - start )) s" >&2
echo "$VENV/bin/python"
