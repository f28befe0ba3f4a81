#!/usr/bin/env bash
# The test command (README, CI): installs what the tests need, then runs every test.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not stack"` for the fast ones.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh

set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
# No `proxylab down` here: every test runs its stacks in a home of its own and stops them
# (tests/conftest.py); the default home may hold a stack of the user's.
if [ "$status" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$status"
