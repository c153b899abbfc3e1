#!/usr/bin/env bash
# Prove the runtime works with the base install alone (numpy, pillow, the platform's one onnxruntime
# package: onnxruntime-gpu on x86-64 Linux and Windows, onnxruntime elsewhere; no torch):
# build .venv-runtime with `pip install .`, then predict with every graph in ARTIFACTS.
#
#   bash scripts/runtime_venv_check.sh ARTIFACTS_DIR      (DEVICE=cpu|auto|cuda, default auto)
#
# The venv is cached: it is rebuilt from scratch when pyproject.toml changes (dependencies) or
# when it no longer runs, and the project is reinstalled (without dependencies) when its code changes.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 1 ] || [ ! -e "$1" ]; then
    echo "usage: $0 ARTIFACTS_DIR (a folder holding manifest.json and its graphs)" >&2
    exit 2
fi
artifacts=$(realpath "$1")
venv=.venv-runtime
deps_stamp="$venv/.deps-$(sha256sum pyproject.toml | cut -c1-16)"
code_stamp="$venv/.code-$(find runtime train export cli.py pyproject.toml -name '*.py' -o -name '*.toml' \
    | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-16)"

if [ ! -f "$deps_stamp" ] || ! "$venv/bin/python" -c "pass" 2>/dev/null; then
    echo "creating $venv (base install only)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet .
    touch "$deps_stamp" "$code_stamp"
elif [ ! -f "$code_stamp" ]; then
    echo "reinstalling the project into $venv (code changed)"
    "$venv/bin/pip" install --quiet --no-deps --force-reinstall .
    rm -f "$venv"/.code-*
    touch "$code_stamp"
else
    echo "reusing $venv"
fi

# Run from outside the repository so that only the installed package can be imported.
cd "$(mktemp -d)"
DEVICE="${DEVICE:-auto}" "$OLDPWD/$venv/bin/python" - "$artifacts" <<'PY'
import importlib.metadata as md
import importlib.util
import os
import sys

import numpy as np

from runtime import Classifier

artifacts = sys.argv[1]
clf = Classifier(artifacts, device=os.environ["DEVICE"])
rng = np.random.default_rng(0)
for config in clf.configs:
    image = rng.integers(0, 256, (37, 29, config.num_channels), dtype=np.uint8)
    top = clf.predict(image, channels=config, top_k=1)[0][0]
    print(f"{config.name:>3}: {top.label} {top.probability:.3f}")
assert "torch" not in sys.modules, "the runtime imported torch"
assert importlib.util.find_spec("torch") is None, "torch is installed in the runtime venv"
assert not importlib.util.find_spec("onnxruntime") is None
installed = sorted(d.metadata["Name"].lower() for d in md.distributions())
from runtime.doctor import expected_onnxruntime
onnxruntimes = [n for n in installed if n in ("onnxruntime", "onnxruntime-gpu")]
assert onnxruntimes == [expected_onnxruntime()], f"expected only {expected_onnxruntime()}, found {onnxruntimes}"
print(f"ok: {len(clf.configs)} configurations on {', '.join(clf.providers)}; runtime from {os.path.dirname(sys.modules['runtime'].__file__)}")
print("installed:", ", ".join(installed))
PY
