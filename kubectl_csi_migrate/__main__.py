"""`python -m kubectl_csi_migrate` runs the plugin as kubectl would."""

import sys

from kubectl_csi_migrate.cli.main import main

sys.exit(main())
