"""``python -m splitmq.agent --broker mqtt://HOST:PORT --id NAME``: run one edge agent."""

from __future__ import annotations

import argparse
import sys

from splitmq.agent.cli import configure_parser, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m splitmq.agent", description=__doc__)
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
