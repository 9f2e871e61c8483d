import sys

from porch.cli import main

sys.exit(main())
