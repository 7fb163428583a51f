import sys

from lossbench import check_checkout

check_checkout()  # before the CLI's imports: another checkout's code would run here (cli.main checks too)

from lossbench.cli import main  # noqa: E402

sys.exit(main())
