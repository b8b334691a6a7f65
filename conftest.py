"""Repository root on sys.path so tests import ``generated.*`` as users do."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
