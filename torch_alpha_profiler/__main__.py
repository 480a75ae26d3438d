"""``python -m torch_alpha_profiler``: the alpha-profiler command line."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
