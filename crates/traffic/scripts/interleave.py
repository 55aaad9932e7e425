#!/usr/bin/env python3
"""Interleaved runs of one traffic command against several builds (or environments).

This machine's speed drifts by 10-20 % within minutes (BENCHMARKS.md), more than most
changes are worth, so a change is judged by runs taken back to back, never by figures
from different hours. This runs every variant once per round, in turn, and prints the
chosen keys of each run's `RESULT {json}` line, then the mean per variant.

A variant is LABEL=DIR, optionally followed by environment settings for that variant's
processes (the services inherit them from traffic):

    cp target/release/{traffic,population-registry,civil-registry} /tmp/before/
    # ...change, rebuild...
    cp target/release/{traffic,population-registry,civil-registry} /tmp/after/
    python3 crates/traffic/scripts/interleave.py --rounds 3 \\
        --keys batch_numbers_per_s,batch_registry_cpu_us_per_number,max_rss_mib \\
        before=/tmp/before after=/tmp/after \\
        -- bench mint --batch-only --numbers 600000

    # one build, two settings of a variable:
    python3 crates/traffic/scripts/interleave.py --keys births_per_s,p99_ms \\
        wait0=/tmp/after:CIVIL_REGISTRY_REGISTRATION__WAIT_FOR_NUMBER_MS=0 \\
        default=/tmp/after -- pilot --quiet

Each DIR must hold `traffic` with `population-registry` and `civil-registry` beside it
(traffic starts the binaries next to its own executable).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys


def parse_variant(text):
    label, sep, rest = text.partition("=")
    if not sep or not label or not rest:
        raise argparse.ArgumentTypeError(f"expected LABEL=DIR[:VAR=VALUE...], got {text!r}")
    directory, *settings = rest.split(":")
    env = {}
    for setting in settings:
        name, sep, value = setting.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"expected VAR=VALUE in {text!r}, got {setting!r}")
        env[name] = value
    traffic = os.path.join(directory, "traffic")
    if not os.access(traffic, os.X_OK):
        raise argparse.ArgumentTypeError(f"{traffic} is not an executable")
    return label, traffic, env


def result_of(output):
    for line in reversed(output.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return None


def main():
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=2, help="runs of every variant (default 2)")
    parser.add_argument(
        "--keys",
        required=True,
        help="comma-separated keys of the RESULT line to print, e.g. births_per_s,p99_ms",
    )
    parser.add_argument("variants", nargs="+", type=parse_variant, metavar="LABEL=DIR[:VAR=VALUE...]")
    argv = sys.argv[1:]
    if "--" not in argv:
        parser.parse_args(argv)  # answers --help and names missing arguments
        parser.error("the traffic arguments follow `--`")
    split = argv.index("--")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    if not command:
        parser.error("no traffic arguments after `--`")
    keys = [k for k in args.keys.split(",") if k]

    seen = {}
    width = max(len(label) for label, _, _ in args.variants)
    for round_no in range(1, args.rounds + 1):
        for label, traffic, env in args.variants:
            run = subprocess.run(
                [traffic, *command],
                env={**os.environ, **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            result = result_of(run.stdout)
            if run.returncode != 0 or result is None:
                tail = "\n".join(run.stdout.splitlines()[-20:])
                sys.exit(f"round {round_no} {label}: exit {run.returncode}, no RESULT line\n{tail}")
            figures = {k: result.get(k) for k in keys}
            for k, v in figures.items():
                if isinstance(v, (int, float)):
                    seen.setdefault((label, k), []).append(v)
            shown = "  ".join(f"{k}={v}" for k, v in figures.items())
            print(f"round {round_no}  {label:<{width}}  {shown}", flush=True)

    print("mean")
    for label, _, _ in args.variants:
        shown = "  ".join(
            f"{k}={statistics.fmean(seen[(label, k)]):.1f}" for k in keys if (label, k) in seen
        )
        print(f"          {label:<{width}}  {shown}")


if __name__ == "__main__":
    main()
