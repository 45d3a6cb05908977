#!/usr/bin/env python3
"""CDK entry point of the pennflow compute node (settings: the `pennflow` object in cdk.json)."""

from stacks.entrypoint import main

if __name__ == "__main__":
    main()
