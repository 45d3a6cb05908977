"""The built-in ``layer_build`` processor: pip-installs a requirements.txt into a layer version.

Processor contract (DESIGN §3) plus one variable:
- ``INPUT_DIR/requirements.txt``: what to install;
- ``LAYER_TARGET_DIR``: the new version's folder (``/layers/<name>/v<version>`` on the node's EFS,
  mounted read-write for this built-in only); packages go to ``<LAYER_TARGET_DIR>/python``;
- ``OUTPUT_DIR/layer-build.json``: the build manifest (Python version, packages, size, file
  count, tree checksum, or pip's last lines on failure), which the finisher publishes.
Exit 0 when the environment was built, 1 when pip failed, 2 when the inputs are missing.
"""

from __future__ import annotations

import sys

from pennflow.layers.build import main

if __name__ == "__main__":
    sys.exit(main())
