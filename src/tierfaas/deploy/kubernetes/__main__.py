"""``python -m tierfaas.deploy.kubernetes bootstrap ...``: see ``bootstrap.main``."""

import sys

from tierfaas.deploy.kubernetes.bootstrap import main

sys.exit(main())
