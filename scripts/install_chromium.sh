#!/usr/bin/env bash
# Installs Debian's `chromium` (headless Chromium for tests/docs/test_rendered_site.py)
# when no Chromium is on the machine. Does nothing when one is there.
#
# Uses apt-get, through sudo when not root (and sudo works without a password).
# Never fails: when Chromium cannot be installed (no apt-get, no root/sudo, no
# network, no package), it says why and exits 0; the render test then skips
# with that reason. Prints the path of the Chromium binary when there is one.
#
# Usage: bash scripts/install_chromium.sh
set -uo pipefail

find_chromium() {
  local name path
  for name in chromium chromium-browser google-chrome-stable google-chrome; do
    path="$(command -v "$name" 2>/dev/null)" && [ -x "$path" ] && { echo "$path"; return 0; }
  done
  [ -x /usr/bin/chromium ] && { echo /usr/bin/chromium; return 0; }
  return 1
}

if path="$(find_chromium)"; then
  echo "install_chromium: found $path, nothing to install"
  exit 0
fi

cannot() {
  echo "install_chromium: Chromium NOT installed: $*" >&2
  echo "install_chromium: the rendered-site test will be skipped" >&2
  exit 0
}

command -v apt-get >/dev/null 2>&1 || cannot "apt-get not found (not a Debian/Ubuntu machine)"

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  cannot "not root and no password-less sudo"
fi

export DEBIAN_FRONTEND=noninteractive
echo "install_chromium: installing Debian chromium with apt-get (a few minutes)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# The package lists may be missing or stale (e.g. in a fresh container): update
# first, but go on if the update fails (an offline mirror may still serve it).
"${SUDO[@]}" apt-get update -qq >"$log" 2>&1 || echo "install_chromium: apt-get update failed (going on)" >&2
if ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium >>"$log" 2>&1; then
  tail -n 5 "$log" >&2
  cannot "apt-get install chromium failed (no network or no such package?)"
fi

if path="$(find_chromium)"; then
  echo "install_chromium: installed $path ($("$path" --version 2>/dev/null | head -n 1))"
else
  cannot "apt-get reported success but no chromium binary was found"
fi
exit 0
