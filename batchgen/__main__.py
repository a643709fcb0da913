"""`python -m batchgen` is the `batchgen` command."""

import sys

from batchgen.cli.main import main

sys.exit(main())
