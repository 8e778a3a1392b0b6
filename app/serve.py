"""``streamlit run`` with the libraries the pages read imported before the server answers.

    python app/serve.py run app/main.py --server.address 127.0.0.1 --server.port 8501

What ``make demo``, ``almdn app`` and the browser tests start. A fresh ``streamlit run``
imports pandas and the store's modules only when the first browser session runs a page: on a
cold 2-core machine that was 3.5 s of a 4.5 s first page. Imported here, that time passes
before ``/_stcore/health`` answers, not while a newcomer looks at a blank page. Only plain
libraries are imported (no Streamlit page code, nothing that needs a script context, no torch).
"""

from __future__ import annotations

import os
import sys

# Jobs and inference beside the app: spinning OpenMP threads slow everything 10-20x on a small
# machine; set before anything can import torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def preload() -> None:
    """Import what every page's first run needs (none of it imports torch)."""
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import PIL.Image  # noqa: F401

    import almdn.acquisition.aggregation  # noqa: F401
    import almdn.projects.jobs  # noqa: F401
    import almdn.projects.rounds  # noqa: F401
    import almdn.display.store_tables  # noqa: F401


def main() -> int:
    preload()
    from streamlit.web import cli

    return cli.main(prog_name="streamlit")


if __name__ == "__main__":
    sys.exit(main())
