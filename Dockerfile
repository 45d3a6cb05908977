# The notebook image of a compute node's sessions (the `notebookImage` setting).
# Build from the repository root and push where the node's tasks can pull it:
#   docker build -f processors/builtin/notebook/Dockerfile -t pennflow-notebook:0.1.0 .
#
# The node runs `python -m jupyter_server ...` in it (pennflow/node/notebooks.py: the server on
# loopback, its token from JUPYTER_TOKEN, reached only through SSM port forwarding). The Python here is
# the `notebookPython` setting: only python-env layers built for this minor version are offered.
# Live `pip install`s go to PIP_TARGET, set per session on the task's own storage.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The same pins as pyproject.toml's `notebook` extra (a test keeps them equal).
RUN pip install "jupyter_server==2.21.1" "jupyter_client==8.10.0" "ipykernel==7.4.0"

# The run's folder is an EFS access point that maps every write to uid/gid 1000.
USER 1000:1000
ENV HOME=/tmp/home
WORKDIR /tmp
CMD ["python", "-m", "jupyter_server", "--help"]
