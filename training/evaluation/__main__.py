# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""`python -m training.evaluation`: the `eclip-evaluate` command."""

import sys

from training.evaluation.cli import main

sys.exit(main())
