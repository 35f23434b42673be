"""earlybrain: fetal and infant brain MRI pipeline."""

import os
from importlib.metadata import PackageNotFoundError, version

# Same input, same output, from one process to the next. With several threads Intel MKL
# (behind torch on CPU) picks code paths by the memory alignment of each run's arrays,
# so a reconstruction of the same stacks differed in the last bits between processes
# (slice poses by up to 0.003 mm on a simulated session, the volume by 0.2 after three
# outer iterations), and on a real session that was enough to change the registration's
# start. Strict conditional numerical reproducibility removes it; set before MKL starts
# (it reads this once) and left alone when a user has set it.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

try:
    __version__ = version("earlybrain")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.1.0"
