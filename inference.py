"""`python inference.py [flags]` is `accelport run [flags]`: see `python inference.py --help`."""

import sys

from accelport.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
