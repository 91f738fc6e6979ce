"""The README's three commands are the ones that exist, CI runs its test command, and every example config parses."""

import re
from pathlib import Path

import pytest

from encoderfit import cli

ROOT = Path(__file__).resolve().parents[1]


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
    assert setup.index("requirements/torch.txt") < setup.index('-e ".[demo,dev]"'), "torch must be installed, pinned, first"
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


def test_readme_file_tree_names_every_module():
    text = (ROOT / "README.md").read_text()
    for module in sorted((ROOT / "src" / "encoderfit").glob("*.py")):
        if module.name not in ("__init__.py", "__main__.py"):
            assert module.name in text, f"README file tree misses {module.name}"
