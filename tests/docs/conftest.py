"""The rendered-site tests run only when the test command asks for them.

They check the site `mkdocs build` wrote, so they need a build from this run:
`scripts/test.sh` builds it, then runs `pytest tests/docs` with
`KERAS_NORMS_SITE_DIR` pointing at it. Without that variable (the per-backend
`pytest tests` runs, a plain `pytest`) this directory is not collected. To run
them by hand:

    .venv/bin/mkdocs build --strict -d /tmp/site
    KERAS_NORMS_SITE_DIR=/tmp/site KERAS_BACKEND=numpy .venv/bin/python -m pytest tests/docs
"""

import os

collect_ignore_glob = [] if os.environ.get("KERAS_NORMS_SITE_DIR") else ["test_*.py"]
