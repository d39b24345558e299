"""The MQTT conformance table of docs/wire.md, from a run of tests/conformance.

::

    .venv/bin/python -m pytest tests/conformance --junitxml=conformance.xml
    .venv/bin/python scripts/conformance_table.py conformance.xml            # print it
    .venv/bin/python scripts/conformance_table.py conformance.xml --write docs/wire.md

Each test is named after the section of the standard it checks
(``test_mqtt5_3_2_2_3_14_server_keep_alive``: MQTT 5.0 section 3.2.2.3.14;
``test_mqtt311_...``: 3.1.1; ``test_mqtt_...``: the same section in both) and its id
says which broker, client and version ran (``[mosquitto-paho-mqtt5]``). A row per
test; a column per broker and per client: ``pass`` when every case with it passed,
``deviation`` when a case is a known deviation of that peer (xfail, footnoted),
``FAIL`` when one failed, ``-`` when none ran. A deviation is charged to the peer its
reason names first (``amqtt ...``, ``paho-mqtt ...``), not to the others in the case.
"""

from __future__ import annotations

import argparse
import re
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

START = "<!-- conformance-table:start -->"
END = "<!-- conformance-table:end -->"
BROKERS = {"embedded": "embedded broker", "mosquitto": "Mosquitto 2.0", "amqtt": "amqtt 0.12"}
CLIENTS = {"splitmq": "own client", "paho": "paho-mqtt 2.2"}
NAME = re.compile(r"test_(mqtt5|mqtt311|mqtt|client)_((?:\d+_)*)(.*)")


@dataclass(frozen=True)
class Case:
    test: str
    broker: str
    client: str
    outcome: str  # pass, fail, xfail, skip
    reason: str


def read_cases(junit: Path) -> list[Case]:
    cases = []
    for testcase in ET.parse(junit).iter("testcase"):
        if ".conformance." not in testcase.get("classname", "") and "conformance" not in (
            testcase.get("file") or ""
        ):
            continue
        name = testcase.get("name", "")
        test, _, params = name.partition("[")
        parts = params.rstrip("]").split("-")
        if len(parts) < 3:
            continue
        outcome, reason = "pass", ""
        for child in testcase:
            if child.tag in ("failure", "error"):
                outcome = "fail"
            elif child.tag == "skipped":
                xfail = child.get("type") == "pytest.xfail"
                outcome = "xfail" if xfail else "skip"
                reason = child.get("message", "")
        cases.append(Case(test, parts[0], parts[1], outcome, reason))
    return cases


def section(test: str) -> tuple[str, str, str]:
    """(version, section, what) of a test name."""
    match = NAME.fullmatch(test)
    if match is None:
        return "", "", test
    version = {"mqtt5": "5.0", "mqtt311": "3.1.1", "mqtt": "both", "client": "-"}[match[1]]
    number = ".".join(part for part in match[2].split("_") if part)
    return version, number or "-", match[3].replace("_", " ")


def blamed(case: Case) -> str:
    """The peer a known deviation belongs to (the first word of its reason)."""
    first = case.reason.removeprefix("XFAIL ").split(" ")[0].lower()
    return "paho" if first.startswith("paho") else first


def cell(cases: list[Case], peer: str, footnotes: dict[str, int]) -> str:
    if not cases:
        return "-"
    if any(c.outcome == "fail" for c in cases):
        return "**FAIL**"
    deviations = [c for c in cases if c.outcome == "xfail" and blamed(c) == peer]
    if deviations:
        number = footnotes.setdefault(deviations[0].reason, len(footnotes) + 1)
        return f"deviation [{number}]"
    if all(c.outcome in ("skip", "xfail") for c in cases):
        return "-"
    return "pass"


def _order(test: str) -> tuple[tuple[int, ...], str]:
    """Sections in numeric order (3.2.2.3.3 before 3.2.2.3.14), then by name."""
    number = section(test)[1]
    return tuple(int(part) for part in number.split(".") if part.isdigit()), test


def table(cases: list[Case]) -> str:
    by_test: dict[str, list[Case]] = defaultdict(list)
    for case in cases:
        by_test[case.test].append(case)
    header = ["MQTT", "section", "what", *BROKERS.values(), *CLIENTS.values()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    footnotes: dict[str, int] = {}
    for test in sorted(by_test, key=_order):
        runs = by_test[test]
        version, number, what = section(test)
        row = [version, number, what]
        row += [cell([c for c in runs if c.broker == b], b, footnotes) for b in BROKERS]
        row += [cell([c for c in runs if c.client == k], k, footnotes) for k in CLIENTS]
        lines.append("| " + " | ".join(row) + " |")
    total = len(cases)
    passed = sum(c.outcome == "pass" for c in cases)
    known = sum(c.outcome == "xfail" for c in cases)
    failed = sum(c.outcome == "fail" for c in cases)
    lines.append("")
    lines.append(
        f"{total} cases: {passed} passed, {known} known deviations of other peers, {failed} failed."
    )
    if footnotes:
        lines.append("")
        for reason, note in sorted(footnotes.items(), key=lambda item: item[1]):
            lines.append(f"[{note}] {reason.removeprefix('XFAIL ')}")
    return "\n".join(lines)


def write(document: Path, text: str) -> None:
    content = document.read_text()
    block = f"{START}\n{text}\n{END}"
    if START in content and END in content:
        before, rest = content.split(START, 1)
        _, after = rest.split(END, 1)
        content = before + block + after
    else:
        content = content.rstrip("\n") + "\n\n" + block + "\n"
    document.write_text(content)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("junit", type=Path, help="the junit xml of a tests/conformance run")
    parser.add_argument("--write", type=Path, help="replace the table block in this file")
    args = parser.parse_args(argv)
    cases = read_cases(args.junit)
    if not cases:
        print(f"no conformance cases in {args.junit}", file=sys.stderr)
        return 1
    text = table(cases)
    if args.write:
        write(args.write, text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
