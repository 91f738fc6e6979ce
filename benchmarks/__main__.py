"""The benchmarks, grouped by what they measure; each script owns a marked section of docs/benchmarks.md.

    python benchmarks                    # this list: every script, its group and what it produces
    python benchmarks NAME [ARGS...]     # run one (e.g. `python benchmarks run --quick`): the same as
                                         # `python benchmarks/GROUP/NAME.py ARGS...`

Groups: speed/ (throughput side by side in one run: encoderfit against the tutorials' and libraries' ways),
quality/ (accuracy against baselines and published figures, on human-labelled data where it exists), gpu/ (the
prepared GPU check: `make gpu-check`). Run each alone: a second CPU-heavy process on the machine moves every figure.
"""

from __future__ import annotations

import ast
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
GROUPS = ("speed", "quality", "gpu")


def scripts() -> dict:
    """{name: path} of every benchmark script, group by group."""
    return {path.stem: path for group in GROUPS for path in sorted((HERE / group).glob("*.py")) if path.stem != "__init__"}


def summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return " ".join(doc.split("\n\n")[0].split())


def main(argv: list) -> int:
    found = scripts()
    if not argv or argv[0] in ("-h", "--help", "list"):
        for group in GROUPS:
            print(f"{group}/")
            for name, path in found.items():
                if path.parent.name == group:
                    print(f"  {name:<18} {summary(path)}")
        return 0
    name = argv[0].removesuffix(".py")
    if name not in found:
        print(f"benchmarks: no script '{name}'; `python benchmarks` lists them", file=sys.stderr)
        return 2
    sys.argv = [str(found[name]), *argv[1:]]
    runpy.run_path(str(found[name]), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
