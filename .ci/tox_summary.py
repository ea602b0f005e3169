"""
One line with the exit status of each check of `make test`, read from the
report of `tox run --result-json FILE` (argument 1).  Exits 1 if any check
failed or did not run.
"""

from __future__ import annotations

import json
import sys

# tox environment -> the name of each of its commands, in order.
CHECKS = {
    "mypy": ["mypy"],
    "lint": ["ruff check", "ruff format"],
    "docs": ["pydoctor"],
    "trial": ["trial"],
    "pytest": ["pytest"],
    "oldest": ["oldest (trial)"],
}


def main(path: str) -> int:
    with open(path) as f:
        envs = json.load(f).get("testenvs", {})
    parts = []
    failed = False
    for env, names in CHECKS.items():
        report = envs.get(env, {})
        codes = [command["retcode"] for command in report.get("test", [])]
        if len(codes) != len(names):
            # The environment did not get as far as its commands (an install
            # failed) or was not run: its own exit status stands for all.
            code = report.get("result", {}).get("exit_code", "not run")
            codes = [code] * len(names)
        for name, code in zip(names, codes, strict=True):
            parts.append(f"{name} exit {code}")
            failed = failed or code != 0
    print(", ".join(parts))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
