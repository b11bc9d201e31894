"""``python -m interfaces.cli``: the same as the ``payledger`` console script."""

from interfaces.cli.main import main

if __name__ == "__main__":  # the committer process is spawned and must not run the CLI again
    main()
