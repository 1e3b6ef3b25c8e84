"""``python -m shardws serve ...``: the same as the ``shardws`` command."""

import sys

from .cli import main

sys.exit(main())
