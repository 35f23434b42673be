"""earlybrain: fetal and infant brain MRI pipeline."""

import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# the checkout the package runs from: shipped models, atlases, config and workflow
REPO_ROOT = Path(__file__).resolve().parent.parent

# Same input, same output, from one process to the next. With several threads Intel MKL
# (behind torch on CPU) picks code paths by the memory alignment of each run's arrays,
# so a reconstruction of the same stacks differed in the last bits between processes
# (slice poses by up to 0.003 mm on a simulated session, the volume by 0.2 after three
# outer iterations), and on a real session that was enough to change the registration's
# start. Strict conditional numerical reproducibility removes that. The code branch is
# pinned to AVX2 rather than left to MKL (AUTO): on CI's machine AUTO chose different
# AVX-512 branches in different processes (the test's three digests were those of the
# AVX512 and AVX512_E1 branches and a third), each rounding differently; AVX2 is on every
# x86-64 CPU of the last decade and took the same time here (4.1 s for both on the test's
# reconstruction). Set before MKL starts (it reads this once); a user's setting wins.
os.environ.setdefault("MKL_CBWR", "AVX2,STRICT")
# MKL may also use fewer threads than asked when the machine is busy (MKL_DYNAMIC), and
# another split of the work rounds differently: with a second process loading both cores,
# three processes gave three digests on the pinned branch. MKL reads this when torch
# loads it, so it holds for processes that import earlybrain first (every step and rule);
# a script that imports torch first needs MKL_DYNAMIC=FALSE in its environment.
os.environ.setdefault("MKL_DYNAMIC", "FALSE")

try:
    __version__ = version("earlybrain")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.1.0"
