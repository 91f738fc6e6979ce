"""The house rules the code keeps (docs/development.md, "The floors"): no private name crosses a module boundary, the
subcommands live in commands/ one module each, and no module grows past the size a reader takes in."""

import ast
from pathlib import Path

import encoderfit

PACKAGE = Path(encoderfit.__file__).parent


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_no_private_name_is_imported_from_another_module():
    """`from .x import _name` couples a module to another's internals: make the name public or move it."""
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("encoderfit")):
                found += [f"{path.relative_to(PACKAGE)}:{node.lineno} imports {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert found == []


def test_commands_hold_one_module_per_subcommand():
    """Every module in commands/ is a subcommand's, named as the command (tune-pretrain: tune_pretrain.py), besides
    the two that describe them: __init__.py (the registry) and options.py (the options several commands share)."""
    from encoderfit.commands import COMMANDS

    names = {name.replace("-", "_") for name in COMMANDS}
    modules = {p.stem for p in (PACKAGE / "commands").glob("*.py") if p.stem not in ("__init__", "options")}
    assert modules <= names, f"modules in commands/ that are not a subcommand: {sorted(modules - names)}"


def test_no_module_grows_past_about_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text(encoding="utf-8").splitlines())) > 420}
    assert long == {}
