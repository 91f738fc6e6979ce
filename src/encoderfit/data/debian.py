"""Debian's package index as offline data: each package's one-line summary, long English description and debtags.

Read from the local apt index: `apt-cache dumpavail` (the Packages lists: name, Description-md5, Tag) joined on
Description-md5 with the Translation-en lists that `apt-get update -o Acquire::Languages=en` downloads (the long
descriptions). Debtags are facet::value tags curated by people on debtags.debian.org.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List

from ..core.errors import UserError

log = logging.getLogger(__name__)
LISTS = Path("/var/lib/apt/lists")
APT_HELPER = Path("/usr/lib/apt/apt-helper")
UPDATE = "apt-get update -o Acquire::Languages=en"


@dataclass
class Package:
    name: str
    summary: str
    description: str  # the long description, paragraphs separated by blank lines
    tags: List[str] = field(default_factory=list)


def _stanzas(text: str) -> Iterator[Dict[str, str]]:
    """RFC 822 stanzas (blank-line separated; continuation lines start with a space) -> {field: value}."""
    from ..core.files import split_lines

    for block in text.split("\n\n"):
        fields, key = {}, None
        for line in split_lines(block):
            if line.startswith((" ", "\t")) and key:
                fields[key] += "\n" + line[1:]
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if fields:
            yield fields


def _run(cmd: List[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, check=True).stdout.decode("utf-8", errors="replace")
    except (OSError, subprocess.CalledProcessError) as err:
        raise UserError(f"reading the apt index failed ({' '.join(cmd[:2])}: {err}); this recipe needs a Debian or Ubuntu "
                        f"machine with an apt index (`{UPDATE}`)") from None


def _long_description(raw: str) -> str:
    """The long description as plain text: ' .' lines are paragraph breaks."""
    from ..core.files import split_lines

    lines = [("" if line.strip() == "." else line.strip()) for line in split_lines(raw)]
    paragraphs = " ".join(line if line else "\n\n" for line in lines)
    return "\n\n".join(" ".join(p.split()) for p in paragraphs.split("\n\n") if p.strip())


def packages() -> List[Package]:
    """Every package of the apt index that has an English long description, with its tags (possibly none)."""
    if shutil.which("apt-cache") is None or not APT_HELPER.is_file():
        raise UserError("this recipe reads Debian's apt index, and this machine has no apt; use a Debian or Ubuntu machine")
    translations = sorted(LISTS.glob("*_i18n_Translation-en*"))
    if not translations:
        raise UserError(f"the apt index in {LISTS} has no English descriptions; run `{UPDATE}` (as root) first")
    descriptions: Dict[str, str] = {}
    for path in translations:
        for stanza in _stanzas(_run([str(APT_HELPER), "cat-file", str(path)])):
            if "Description-md5" in stanza and "Description-en" in stanza:
                descriptions[stanza["Description-md5"]] = stanza["Description-en"]
    out, seen = [], set()
    for stanza in _stanzas(_run(["apt-cache", "dumpavail"])):
        name, md5 = stanza.get("Package"), stanza.get("Description-md5")
        if not name or name in seen or md5 not in descriptions:
            continue
        seen.add(name)
        summary, _, rest = descriptions[md5].partition("\n")
        tags = [t.strip() for t in stanza.get("Tag", "").replace("\n", " ").split(",") if t.strip()]
        out.append(Package(name, summary.strip(), _long_description(rest), tags))
    if not out:
        raise UserError(f"no package in the apt index has an English description; run `{UPDATE}` (as root) first")
    log.info("apt index: %d packages with English descriptions, %d of them tagged", len(out), sum(bool(p.tags) for p in out))
    return out
