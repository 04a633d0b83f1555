"""Allow ``python -m storscan``."""

from storscan.cli import main

main()
