"""The README's three commands are the ones that exist, CI runs its test command, and every example config parses."""

import re
from pathlib import Path

import pytest

from encoderfit import cli

ROOT = Path(__file__).resolve().parents[2]


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart.*?```bash\n(.*?)```", text, re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_quickstart_is_setup_train_test():
    assert quickstart_commands() == ["make setup", "encoderfit train --config examples/bbc-news.yaml", "make test"]


def test_ci_runs_setup_then_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.index("make setup") < ci.index("make test")
    makefile = (ROOT / "Makefile").read_text()
    setup = makefile.split("\nsetup:")[1].split("\n\n")[0]
    assert setup.index("requirements/torch.txt") < setup.index('-e ".[demo,dev,modal,track]"'), "torch must be installed, pinned, first"
    assert "torch==2.13.0" in (ROOT / "requirements" / "torch.txt").read_text()
    assert "-c $(LOCK)" in setup and "LOCK := requirements/lock.txt" in makefile, "installs must follow the lock"


def test_the_lock_pins_every_dependency_and_leaves_torch_to_setup():
    import re

    from packaging.requirements import Requirement

    lock = (ROOT / "requirements" / "lock.txt").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)$", lock, flags=re.M))
    pins = {name.lower().replace("_", "-"): version for name, version in pins.items()}
    assert "torch" not in pins and not any(name.startswith("nvidia-") for name in pins)  # CPU torch comes first, alone
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + [d for extra in ("demo", "dev", "ner") for d in project["optional-dependencies"][extra]]
    for spec in map(Requirement, wanted):
        name = spec.name.lower().replace("_", "-")
        if name != "torch":
            assert name in pins, f"{name} is not in the lock: run make lock"
            assert spec.specifier.contains(pins[name], prereleases=True), f"the lock's {name}=={pins[name]} is outside {spec}"


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_config_parses(example, capsys):
    import yaml

    command = "pretrain" if "corpus" in yaml.safe_load(example.read_text()) else "train"  # pre-training reads a corpus
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--config", str(example), "--print_config"])
    assert exit_info.value.code == 0
    assert "learning_rate" in capsys.readouterr().out


def test_the_file_tree_names_every_folder_and_module():
    text = (ROOT / "docs" / "development.md").read_text()
    tree = text.split("## Files", 1)[1].split("```")[1]
    package = ROOT / "src" / "encoderfit"
    for module in sorted(package.rglob("*.py")):
        if module.name not in ("__init__.py", "__main__.py"):
            assert module.name in tree, f"the file tree of docs/development.md misses {module.relative_to(package)}"
    for folder in sorted(p for p in package.iterdir() if (p / "__init__.py").is_file()):
        assert f"  {folder.name}/" in tree, f"the file tree of docs/development.md misses {folder.name}/"


def test_the_readme_is_short_and_links_every_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 160, "the README is read in five minutes: move details to docs/"
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.name != "index.md":
            assert f"](docs/{page.name})" in text, f"the README does not link docs/{page.name}"


def documented_commands():
    """Every `encoderfit ...` command in the README's and the docs' bash blocks: (where, argv)."""
    import shlex

    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        lines = [line for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.replace("\\\n", " ").splitlines()]
        lines += re.findall(r"`(encoderfit [a-z-]+ [^`]*)`", text)  # and the commands quoted in the prose
        for line in lines:
            line = line.split(" #")[0].split("|")[-1].strip().lstrip("$ ")
            if line.startswith("encoderfit ") and "..." not in line and "<" not in line:
                found.append((f"{page.name}: {line}", shlex.split(line)[1:]))
    return found


def test_every_documented_command_names_a_real_subcommand_and_real_flags():
    """The commands the docs show exist with the flags they use (renaming a flag without the docs fails here)."""
    parser = cli.build_parser(cli.commands())
    commands = documented_commands()
    assert len(commands) > 30
    from encoderfit.launch import ENGINES

    launchers = cli.build_parser(ENGINES, skip={"command"})
    for where, argv in commands:
        if argv[:1] == ["launch"]:  # `launch ENGINE [its flags] -- COMMAND [the command's flags]`
            assert argv[1] in ENGINES, f"{where}: no launch engine '{argv[1]}'"
            split = argv.index("--") if "--" in argv else len(argv)
            known = set(cli._known_keys(launchers, argv[1])) | {"help"}
            for arg in argv[2:split]:
                assert not arg.startswith("--") or arg[2:].split("=")[0] in known, f"{where}: no launch flag {arg}"
            argv = argv[split + 1:] or ["train"]
        assert argv and argv[0] in cli.commands(), f"{where}: no subcommand '{argv[0] if argv else ''}'"
        known = set(cli._known_keys(parser, argv[0])) | {"config", "help", "print_config"}
        for arg in argv[1:]:
            if arg.startswith("--"):
                key = arg[2:].split("=")[0]
                assert key in known or any(k.startswith(key + ".") for k in known), f"{where}: no flag --{key}"


def test_the_docs_site_builds_strictly(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("mkdocs")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Tasks: one command each" in (tmp_path / "site" / "index.html").read_text()  # the home page is the README
