"""``python -m dltricks.cli``: the same as the ``dltricks`` script."""

import sys

from dltricks.cli.main import main

sys.exit(main())
