#!/usr/bin/env bash
# Install tmux for the Ctrl-C test (tests/launch/test_ctrl_c.py), which types C-c into a real
# terminal. A no-op when it is on PATH. Needs root (apt).
set -euo pipefail
if command -v tmux >/dev/null; then echo "tmux: already installed ($(tmux -V))"; exit 0; fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends tmux
echo "tmux: installed ($(tmux -V))"
