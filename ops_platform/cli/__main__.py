import sys

from ops_platform.cli.main import main

sys.exit(main())
