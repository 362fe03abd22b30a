"""`python -m gateway` runs the `speech-gateway` command."""

import sys

from gateway.cli import main

sys.exit(main())
