#!/usr/bin/env bash
# Builds the documentation site strictly: any MkDocs or mkdocstrings/griffe
# warning fails the build (exit status non-zero).
#
# Steps: bundle KaTeX (docs/scripts/fetch_katex.sh, a no-op when present),
# `mkdocs build --strict`, then check that the site carries the bundled KaTeX.
#
# Never pass -q/--quiet to the strict build: MkDocs drops the warnings before
# strict mode counts them, so a quiet build passes with warnings. Noise is
# removed line by line instead (the known INFO lines below); every WARNING and
# ERROR line is printed.
#
# Usage: bash scripts/build_docs.sh [CONFIG_FILE [SITE_DIR]]
#   CONFIG_FILE  mkdocs config (default: mkdocs.yml at the repository root);
#                its docs_dir must be the `docs` folder next to it.
#   SITE_DIR     where the site is written (default: `site` next to the config,
#                as mkdocs.yml's site_dir says).
#   PY           environment: the Python with mkdocs (default: the repository's
#                .venv, else python3).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
config="${1:-$root/mkdocs.yml}"
site="${2:-}"
config_dir="$(cd "$(dirname "$config")" && pwd)"
if [ -z "${PY:-}" ]; then
  if [ -x "$root/.venv/bin/python" ]; then PY="$root/.venv/bin/python"; else PY=python3; fi
fi

bash "$config_dir/docs/scripts/fetch_katex.sh" || { echo "build_docs: KaTeX could not be bundled" >&2; exit 1; }

site="${site:-$config_dir/site}"
rm -rf "$site"  # a failed build must not leave an older site behind for the tests

# NO_MKDOCS_2_WARNING silences Material's end-of-life banner (not a build
# warning: it is printed before the build and never counted).
NO_MKDOCS_2_WARNING=1 "$PY" -m mkdocs build --strict -f "$config" -d "$site" 2>&1 \
  | grep -v -E '^INFO +- +(Cleaning site directory|Building documentation to directory|Documentation built in )'
build_status=${PIPESTATUS[0]}
if [ "$build_status" -ne 0 ]; then
  echo "build_docs: mkdocs build --strict FAILED (exit $build_status): fix the warnings above" >&2
  exit 1
fi
if [ ! -f "$site/assets/vendor/katex/katex.min.js" ]; then
  echo "build_docs: $site/assets/vendor/katex/katex.min.js missing: the site would render no math" >&2
  exit 1
fi
echo "build_docs: strict build passed, site in $site"
