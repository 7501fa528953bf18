"""``python -m pytest_vllm_env merge|fleet ...``: the console script without installing it."""

import sys

from pytest_vllm_env.cli import main

sys.exit(main())
