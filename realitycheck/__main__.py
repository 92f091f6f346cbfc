import sys

from realitycheck.cli import main

sys.exit(main())
