import sys

from pgferry.cli.app import main

sys.exit(main())
