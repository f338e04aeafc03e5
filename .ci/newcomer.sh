#!/usr/bin/env bash
# The README's test command (`make test`, the fast tier: the tests not marked slow) as a
# newcomer's machine sees it: a fresh virtual environment made
# by `make` from the project's own files (so no Detectron2, which is not on PyPI), CI unset,
# and no SLURM, Chromium or tmux reachable. It must pass there; what it skips, it names.
#
# On CI this pass runs before anything is installed, so nothing needs hiding. Run again on a
# machine that has them (a developer's, or CI's after the second pass), the
# programs are hidden in a private mount namespace: an empty, non-executable file is bound
# over each one, so `shutil.which` finds nothing, as on a machine without them. Hiding needs
# root (unshare --mount). The daemons may keep running: nothing here can reach them.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${NEWCOMER_VENV:-/tmp/repro-newcomer/.venv}"
log="${NEWCOMER_LOG:-/tmp/repro-newcomer/make-test.log}"
rm -rf "$venv"
mkdir -p "$(dirname "$venv")" "$(dirname "$log")"

hide=()
for tool in sbatch srun salloc sinfo sacct squeue scancel scontrol chromium chromium-browser chromedriver tmux; do
  path=$(command -v "$tool" 2>/dev/null) && hide+=("$(readlink -f "$path")")
done
if [ ${#hide[@]} -gt 0 ] && [ "$(id -u)" != 0 ]; then
  echo "newcomer: ${hide[*]} would have to be hidden, which needs root (unshare --mount); run as root" >&2
  exit 2
fi
empty=$(mktemp /tmp/repro-newcomer-hidden.XXXXXX)  # mode 0600: nobody may execute it
trap 'rm -f "$empty"' EXIT
echo "newcomer: fresh venv $venv; hiding: ${hide[*]:-nothing (none installed)}; CI unset"

run=(env -u CI make test VENV="$venv")
if [ ${#hide[@]} -gt 0 ]; then
  run=(unshare --mount --propagation private bash -c '
    set -e; empty=$1; shift; n=$1; shift
    for p in "${@:1:$n}"; do mount --bind "$empty" "$p"; done
    shift "$n"; exec "$@"' newcomer "$empty" "${#hide[@]}" "${hide[@]}" "${run[@]}")
fi
set +e
"${run[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# pytest -q ends with one line such as "477 passed, 28 skipped, 60 deselected, 3 warnings in 513.32s".
summary=$(grep -E "^(=+ )?[0-9]+ (passed|failed|error)" "$log" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//' || true)
skipped=$(grep -oE "[0-9]+ skipped" <<<"$summary" | grep -oE "[0-9]+" || echo 0)
echo "newcomer: make test exit $status: ${summary:-no pytest summary}; $skipped skipped, because:"
grep -E "^SKIPPED " "$log" | sed 's/^/  /' || echo "  (nothing skipped)"
exit "$status"
