"""`python -m engine`: the command line's entry point; the parser and the commands are in `engine.cli`."""

import sys

from engine.cli.main import main

if __name__ == "__main__":  # guarded: spawned worker processes import this module as __mp_main__
    sys.exit(main())
