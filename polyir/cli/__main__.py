"""`python -m polyir.cli`: the same as the `polyir` console script."""
import sys

from .main import main

sys.exit(main())
