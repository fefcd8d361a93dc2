#!/bin/sh
# Creates the Python virtualenv the end-to-end tests use as a third-party GRIP publisher
# (tests/e2e/pygrip.rs). Run from anywhere; the venv goes to <workspace>/target/e2e-venv.
# Point GRIPMESH_TEST_PYTHON at another interpreter to use an existing environment instead.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
python3 -m venv "$root/target/e2e-venv"
"$root/target/e2e-venv/bin/pip" install --quiet -r "$root/tests/py/requirements.txt"
echo "ok: $root/target/e2e-venv/bin/python"
