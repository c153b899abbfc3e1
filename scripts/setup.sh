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

# The browser bundle (`python cli.py export --web`) copies onnxruntime-web from web/node_modules
# (pinned by web/package-lock.json); the browser test drives Debian's chromium. Each is installed
# once, quietly; where that cannot be done the bundle command says what to install and the
# browser test is skipped, so the rest of the suite still runs.
if command -v npm >/dev/null 2>&1; then
    npm_stamp=web/node_modules/.installed-$(sha256sum web/package-lock.json | cut -c1-16)
    if [ ! -f "$npm_stamp" ]; then
        if npm ci --prefix web --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null; then
            touch "$npm_stamp"
        else
            echo "setup: npm ci --prefix web failed; export --web will ask for it" >&2
        fi
    fi
else
    echo "setup: npm not found; export --web needs it once (npm ci --prefix web)" >&2
fi
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; then
        echo "setup: could not install chromium; the browser test will be skipped" >&2
    fi
fi
