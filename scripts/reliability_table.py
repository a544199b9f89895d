"""Run every bad-input case of tests/reliability_cases.py and write what it raised as a Markdown table.

    python scripts/reliability_table.py           # print the table
    python scripts/reliability_table.py --write   # replace the table in docs/reliability.md

The table is generated from real calls, so it shows the messages users actually get.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from reliability_cases import CASES, Context  # noqa: E402

DOC = os.path.join(ROOT, "docs", "reliability.md")
START, END = "<!-- bad-input-table:start -->", "<!-- bad-input-table:end -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table() -> str:
    rows = ["| entry | bad input | error | message (from a real run) |", "| --- | --- | --- | --- |"]
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            ctx = Context(tmp)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    case.call(ctx)
                got, message = "(no error)", "NOT RAISED"
            except Exception as exc:  # the table reports whatever happened, right or wrong
                got, message = type(exc).__name__, str(exc).replace(tmp, "<dir>")
        flag = "" if got == case.exc.__name__ else f" **expected {case.exc.__name__}**"
        rows.append(f"| `{case.entry}` | {_cell(case.what)} | `{got}`{flag} | {_cell(message)} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"replace the table between the markers in {DOC}")
    args = parser.parse_args()
    text = table()
    if not args.write:
        print(text)
        return
    with open(DOC, encoding="utf-8") as f:
        doc = f.read()
    head, rest = doc.split(START, 1)
    tail = rest.split(END, 1)[1]
    with open(DOC, "w", encoding="utf-8") as f:
        f.write(f"{head}{START}\n{text}\n{END}{tail}")
    print(f"wrote {len(CASES)} rows to {DOC}")


if __name__ == "__main__":
    main()
