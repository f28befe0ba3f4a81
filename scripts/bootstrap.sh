#!/usr/bin/env bash
# Installs everything the native stack and the tests need, and does nothing when all is there:
# Debian packages, uv, the lab's locked Python environment, toxiproxy and the pinned LiteLLM.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
DEBIAN_PACKAGES=(postgresql redis-server prometheus wrk)
TOOLS=.proxylab/tools

log() { printf 'bootstrap: %s\n' "$*" >&2; }

missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  # --no-install-recommends: Prometheus would otherwise pull in exporters we do not use.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts the packaged services; the lab runs its own instances on its own ports.
  for service in postgresql redis-server prometheus; do
    $SUDO service "$service" stop >/dev/null 2>&1 || true
  done
fi

if [ ! -x "$TOOLS/bin/uv" ] || [ "$("$TOOLS/bin/uv" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  log "installing uv $UV_VERSION into $TOOLS"
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install -q "uv==$UV_VERSION"
fi

log "syncing the lab's environment from uv.lock"
"$TOOLS/bin/uv" sync --frozen --quiet

log "toxiproxy and LiteLLM"
.venv/bin/proxylab install
