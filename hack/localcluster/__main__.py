"""`python hack/localcluster ...` (a folder run as a script) or `python -m localcluster` with hack/ on sys.path."""

import sys
from pathlib import Path

if not __package__:
    # Run as a folder: make `localcluster` importable as a package so relative imports work.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from localcluster.cli import main
else:
    from .cli import main

sys.exit(main())
