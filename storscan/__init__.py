"""storscan: offline analysis, audit and pruning of Docker/OCI registry storage."""

__version__ = "0.1.0"
