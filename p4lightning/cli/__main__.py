"""``python -m p4lightning.cli``: the console script."""

from p4lightning.cli.app import main

main()
