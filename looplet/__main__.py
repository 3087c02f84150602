"""``python -m looplet``: the command line. Importing this module runs nothing; it exports ``main``."""

from looplet.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
