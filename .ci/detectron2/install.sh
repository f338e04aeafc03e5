#!/usr/bin/env bash
# Build Detectron2 at the commit CI tests against into the project's venv, from the source
# archive beside the checkout (../shared/vendor/, since CI cannot reach Detectron2's repository
# and Detectron2 has no usable release on PyPI). Never copies Detectron2 into the repository.
#
# Idempotent: a no-op when detectron2 of COMMIT is already importable from the venv. Records the
# commit in the installed distribution's metadata (REPRO_DETECTRON2_COMMIT in its .dist-info,
# removed by pip with any reinstall), where repro.transfer.detectron2.detectron2_commit() reads it
# into each detection run's final.json.
#
# Users elsewhere install the same commit from Detectron2's repository (docs/transfer.md):
#   pip install "setuptools<81" wheel
#   pip install --no-build-isolation "git+https://github.com/facebookresearch/detectron2.git@$COMMIT"
set -euo pipefail
COMMIT=02b5c4e295e990042a714712c21dc79b731e8833
RECORD=REPRO_DETECTRON2_COMMIT

repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
archive="$(dirname "$repo")/shared/vendor/detectron2-${COMMIT:0:7}.tar.gz"

# The venv first (what `make test` would create): torch must be there before the build.
make --no-print-directory install VENV="$VENV"

installed() {
  "$PY" -W ignore - "$RECORD" "$COMMIT" <<'PY'
import importlib.metadata as md, sys
try:
    import detectron2, detectron2.model_zoo  # noqa: F401  (model_zoo imports pkg_resources)
    recorded = (md.distribution("detectron2").read_text(sys.argv[1]) or "").strip()
except Exception:
    sys.exit(1)
sys.exit(0 if recorded == sys.argv[2] else 1)
PY
}

if installed; then
  echo "detectron2: $COMMIT already installed in $VENV"
  exit 0
fi
if [ ! -f "$archive" ]; then
  echo "detectron2: source archive $archive not found: CI expects Detectron2 $COMMIT there" \
       "(shared/vendor/ beside the checkout); elsewhere install it from its repository (docs/transfer.md)" >&2
  exit 1
fi
t0=$(date +%s)
# setuptools<81: detectron2.model_zoo imports pkg_resources. --no-build-isolation: the build
# compiles against the venv's torch.
"$PY" -m pip install --quiet --disable-pip-version-check "setuptools<81" wheel
"$PY" -m pip install --quiet --disable-pip-version-check --no-build-isolation "$archive"
"$PY" - "$RECORD" "$COMMIT" <<'PY'
import importlib.metadata as md, pathlib, sys
dist = md.distribution("detectron2")
meta = next(f for f in dist.files if f.name == "METADATA" and f.parent.name.endswith(".dist-info"))
(pathlib.Path(dist.locate_file(meta)).parent / sys.argv[1]).write_text(sys.argv[2] + "\n")
PY
installed || { echo "detectron2: installed, but $COMMIT is not importable from $VENV" >&2; exit 1; }
echo "detectron2: $COMMIT built and installed in $VENV in $(( $(date +%s) - t0 )) s"
