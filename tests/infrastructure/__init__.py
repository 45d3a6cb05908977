import os

# The CDK runs on the project's node.js 20; its end-of-life notice would fill every test report.
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
