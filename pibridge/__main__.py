import sys

from pibridge.cli import main

sys.exit(main())
