"""`python -m jaxcot`: the same command line as `jaxcot`."""

import sys

from jaxcot.cli import main

sys.exit(main())
