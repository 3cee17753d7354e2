"""The docs tests run only in the docs step of the test command.

`test_rendered_site.py` checks the site `mkdocs build` wrote, so it needs a
build from this run; `test_strict_build.py` runs `scripts/build_docs.sh` on
copies of the docs (three builds, about half a minute) and is kept out of the
per-backend runs for that reason. `scripts/test.sh` builds the site with
`scripts/build_docs.sh`, then runs `pytest tests/docs` with
`KERAS_NORMS_SITE_DIR` pointing at it. Without that variable (the per-backend
`pytest tests` runs, a plain `pytest`) this directory is not collected. To run
them by hand:

    bash scripts/build_docs.sh mkdocs.yml /tmp/site
    KERAS_NORMS_SITE_DIR=/tmp/site KERAS_BACKEND=numpy .venv/bin/python -m pytest tests/docs
"""

import os

collect_ignore_glob = [] if os.environ.get("KERAS_NORMS_SITE_DIR") else ["test_*.py"]
