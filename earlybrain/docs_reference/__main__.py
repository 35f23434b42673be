"""`python -m earlybrain.docs_reference [--check]`."""

from earlybrain.docs_reference import main

raise SystemExit(main())
