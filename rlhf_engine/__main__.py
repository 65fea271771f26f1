"""Entry point for ``python -m rlhf_engine``."""

import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rlhf_engine.cli import main

sys.exit(main())
