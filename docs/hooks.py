"""MkDocs hooks: tables rendered from the code at build time, and nav entries whose page is absent left out.

A page writes `<!-- generated: NAME -->` on a line of its own where a table of GENERATED goes, so the path,
option and head tables of the site are always the entries' own.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MARKER = re.compile(r"^<!-- generated: (\w+) -->$", re.MULTILINE)


def _tables() -> dict:
    from harness import backends, paths
    from harness.paths import head, options

    frameworks = tuple(backends.FRAMEWORKS)
    return {
        "path_table": lambda: paths.path_table(frameworks),
        "option_table": lambda: options.option_table(frameworks),
        "head_path_table": head.path_table,
    }


def render(markdown: str) -> str:
    """The page with every marker replaced by its table; an unknown name raises (a typo fails the build)."""
    tables = _tables()
    return MARKER.sub(lambda m: tables[m.group(1)](), markdown)


def _present(items: list, docs_dir: Path) -> list:
    """The nav without entries whose Markdown file does not exist (pages other features add in their own time)."""
    kept = []
    for item in items:
        ((title, value),) = item.items() if isinstance(item, dict) else ((None, item),)
        if isinstance(value, list):
            value = _present(value, docs_dir)
            if value:
                kept.append({title: value})
        elif value.startswith(("http://", "https://")) or (docs_dir / value).is_file():
            kept.append(item)
    return kept


def on_config(config):
    config["nav"] = _present(config["nav"], Path(config["docs_dir"]))
    return config


def on_page_markdown(markdown, page, config, files):
    return render(markdown)
