"""``python -m tuinet``: the command line."""

from tuinet.cli.main import main

main()
