"""``python -m almdn.cli``: the ``almdn`` command."""

import sys

from almdn.cli.commands import main

sys.exit(main())
