"""A run report a person reads: one self-contained HTML file (inline CSS, SVG and script, no network).

``data`` gathers what the report shows from a local run or a node's API answer; ``render`` writes it.
"""
