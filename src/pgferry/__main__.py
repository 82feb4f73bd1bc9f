from pgferry.cli.entry import entry

entry()
