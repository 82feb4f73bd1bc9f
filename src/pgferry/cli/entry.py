"""The ``pgferry`` console script: ``pgferry lint`` on its fast path, everything else via Typer.

Contract: :func:`entry` runs ``pgferry lint ...`` through
:func:`pgferry.cli.lint.fast_main` (no Typer, rich, pydantic or psycopg: the
start-up budget) when it understands the arguments, else the full CLI
(:func:`pgferry.cli.app.main`); it exits with the command's code.
"""

import sys


def entry() -> None:  # pragma: no cover - exercised through the installed script
    """Console-script entry: ``pgferry lint`` on the fast path, everything else via Typer."""
    argv = sys.argv[1:]
    if "lint" in argv:
        from pgferry.cli.lint import fast_main

        rc = fast_main(argv)
        if rc is not None:
            # everything is written: skip the interpreter's teardown of a heap of parse
            # trees and findings (~15 ms over 1,000 files); nothing of ours runs at exit
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except OSError:
                sys.exit(rc)
            import os

            os._exit(rc)
    from pgferry.cli.app import main

    sys.exit(main())
