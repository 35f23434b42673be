"""`python -m earlybrain ...` = the `earlybrain` console script."""

import sys

from earlybrain.cli import main

sys.exit(main())
