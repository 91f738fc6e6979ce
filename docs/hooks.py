"""MkDocs hook: the site's home page is the README itself (its links to docs/X.md made relative to the site), so
the two never drift apart."""

from pathlib import Path


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri == "index.md":
        readme = Path(config["docs_dir"]).parent / "README.md"
        return readme.read_text(encoding="utf-8").replace("](docs/", "](").replace(
            "The documentation site (`mkdocs serve`, or the Markdown files in `docs/`):", "The pages of this site:")
    return markdown
