"""The command line: thin Typer commands that parse, call :mod:`pgferry.commands`, render."""
