"""``python -m gpumlp ...``: the same command as ``gpumlp``."""

from .cli import main

raise SystemExit(main())
