"""Entry point for ``python -m rlhf_engine``."""

import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from .cli import main  # noqa: E402

sys.exit(main())
