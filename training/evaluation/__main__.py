# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""`python -m eclip.training.evaluation`: the `eclip-evaluate` command."""

import sys

from eclip.training.evaluation.cli import main

sys.exit(main())
