"""
pytest only: run the suite in a scratch directory, as trial does in
_trial_temp, so that trial's relative C{self.mktemp()} paths never land in the
repository.  (No fixtures: the tests are trial TestCases and must also run
under trial.)
"""

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Keep the source tree importable after the chdir below.
sys.path.insert(0, str(REPO))
_scratch = tempfile.mkdtemp(prefix="securenet-pytest-")
os.chdir(_scratch)
