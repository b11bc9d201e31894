"""``python -m interfaces.cli``: the same as the ``payledger`` console script."""

from interfaces.cli.main import main

main()
