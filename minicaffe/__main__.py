"""``python -m minicaffe``: the same command line as the installed ``minicaffe``."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
