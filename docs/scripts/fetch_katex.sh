#!/usr/bin/env bash
# Bundle KaTeX locally so the docs render math offline (no CDN).
#
# Downloads the katex@0.16 tarball with `npm pack` (no node_modules, no install
# scripts) and copies what the site needs from package/dist/ into
# docs/assets/vendor/katex/ (gitignored): katex.min.js, katex.min.css, fonts/,
# contrib/auto-render.min.js, plus KaTeX's LICENSE. dist/README.md is left out on
# purpose: mkdocs would build it as a page. Does nothing when
# docs/assets/vendor/katex/katex.min.js exists.
#
# Usage: bash docs/scripts/fetch_katex.sh        (from any directory)
#        KATEX_VERSION=0.16.22 bash docs/scripts/fetch_katex.sh   (pin a patch release)
set -euo pipefail

KATEX_VERSION="${KATEX_VERSION:-0.16}"
DOCS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${DOCS_DIR}/assets/vendor/katex"

if [[ -f "${DEST}/katex.min.js" ]]; then
  echo "fetch_katex: ${DEST}/katex.min.js present, nothing to do"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "fetch_katex: npm not found; install Node.js/npm, or copy KaTeX's dist/ into ${DEST}" >&2
  exit 1
fi

TMP="$(mktemp -d)"
trap 'rm -rf "${TMP}"' EXIT

(cd "${TMP}" && npm pack --silent "katex@${KATEX_VERSION}" >/dev/null)
TARBALL="$(ls "${TMP}"/katex-*.tgz | head -n 1)"
tar -xzf "${TARBALL}" -C "${TMP}" package/dist package/LICENSE

for f in katex.min.js katex.min.css contrib/auto-render.min.js; do
  if [[ ! -f "${TMP}/package/dist/${f}" ]]; then
    echo "fetch_katex: ${f} missing from ${TARBALL##*/}" >&2
    exit 1
  fi
done

rm -rf "${DEST}"
mkdir -p "${DEST}/contrib"
cp "${TMP}/package/dist/katex.min.js" "${TMP}/package/dist/katex.min.css" "${DEST}/"
cp -R "${TMP}/package/dist/fonts" "${DEST}/fonts"
cp "${TMP}/package/dist/contrib/auto-render.min.js" "${DEST}/contrib/"
cp "${TMP}/package/LICENSE" "${DEST}/LICENSE"
echo "fetch_katex: installed ${TARBALL##*/} into ${DEST}"
