import sys

from bfdkern.cli import main

sys.exit(main())
