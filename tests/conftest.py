"""Settings every test shares."""

import os
import sys

from pennflow.engine.environment import PROCESSOR_PATH_ENV, SYSTEM_PATH

# The test workflows' processors run `python` and expect this interpreter, as a user would who sets
# PENNFLOW_PROCESSOR_PATH; tests of the default PATH remove it.
os.environ.setdefault(PROCESSOR_PATH_ENV, os.pathsep.join([os.path.dirname(sys.executable), *SYSTEM_PATH]))
