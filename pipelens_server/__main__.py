import sys

from pipelens_server.cli import main

raise SystemExit(main(sys.argv[1:]))
