"""C{python -m examples.api}: serve the example (see L{examples.api.app})."""

import sys

from examples.api.app import main

sys.exit(main())
