"""What the lambda processor bootstrap adds to one invocation, side by side in one run.

Each invocation goes through a loopback Runtime API (next, response) and reads the run's two SSM
parameters from a loopback SSM, signed, then runs ``true`` as the processor; the baseline spawns
``true`` directly. Printed: the median of each, the bootstrap's overhead per invocation in ms, and
the ratio. Lambda's own network hops (a real Runtime API, SSM over the VPC) add to this on AWS.

Run: python benchmarks/lambda_bootstrap.py [--invocations N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pennflow.processors import lambda_bootstrap as boot  # noqa: E402
from tests.fakes.lambda_runtime import fake_runtime, fake_ssm  # noqa: E402

RUN, TOKEN = "/bench/slots/slot-00/run-id", "/bench/slots/slot-00/session-token"


def bootstrap_times(invocations: int, folder: Path) -> list[float]:
    event = {
        "processorId": "bench",
        "environment": [
            {"Name": "INPUT_DIR", "Value": str(folder / "in")},
            {"Name": "OUTPUT_DIR", "Value": str(folder / "out")},
        ],
    }
    times = []
    with fake_ssm({RUN: "run-1", TOKEN: "token"}) as ssm, fake_runtime() as runtime:
        environ = {
            "PATH": os.environ["PATH"],
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "AK",
            "AWS_SECRET_ACCESS_KEY": "SK",
            boot.SSM_ENDPOINT_VAR: ssm.url,
            boot.COMMAND_VAR: json.dumps(["true"]),
            boot.RUN_ID_PARAMETER_VAR: RUN,
            boot.TOKEN_PARAMETER_VAR: TOKEN,
            boot.RUN_ID_NAMES_VAR: "INTEGRATION_ID,EXECUTION_RUN_ID",
        }
        api = boot.RuntimeApi(runtime.address)
        for index in range(invocations):
            runtime.invoke(event, f"r-{index}")
            started = time.perf_counter()
            boot.serve(api, environ, max_invocations=1)
            times.append(time.perf_counter() - started)
        assert len(runtime.posted) == invocations and all(
            p.path.endswith("/response") for p in runtime.posted
        )
    return times


def bare_times(invocations: int) -> list[float]:
    times = []
    for _ in range(invocations):
        started = time.perf_counter()
        subprocess.run(["true"], check=True)
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invocations", type=int, default=50)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load: {os.getloadavg()[0]:.2f}, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as folder:
        bare_times(5)  # warm the page cache
        bare = statistics.median(bare_times(args.invocations))
        through = statistics.median(bootstrap_times(args.invocations, Path(folder)))
    print(f"true, spawned directly:         {bare * 1000:7.2f} ms (median of {args.invocations})")
    print(f"true, through the bootstrap:    {through * 1000:7.2f} ms (Runtime API, 2 SSM reads, child)")
    print(f"bootstrap overhead:             {(through - bare) * 1000:7.2f} ms per invocation")
    print(f"ratio (bootstrap / bare):       {through / bare:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
