import sys

from lossbench.cli import main

sys.exit(main())
