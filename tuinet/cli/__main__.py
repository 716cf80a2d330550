"""``python -m tuinet.cli``: the command line."""

from tuinet.cli.main import main

main()
