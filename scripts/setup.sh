#!/usr/bin/env bash
# Create .venv (once) and install the project with its training and test extras.
# torch 2.14.1 and torchvision 0.29.1 come from the local wheel folder pip is configured with.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    .venv/bin/pip install --quiet -e ".[train,dev]"
    touch "$stamp"
fi
