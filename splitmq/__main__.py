"""``python -m splitmq``: the ``splitmq`` command."""

import sys

from splitmq.cli import main

sys.exit(main())
