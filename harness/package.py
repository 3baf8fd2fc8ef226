"""Where this copy of the harness keeps its configurations and studies, and the install line that fits it.

conf/ and experiments/ sit at the top of the repository and ship inside the package as harness.conf
and harness.experiments (pyproject.toml maps them), so an installed copy runs from any folder.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from urllib.parse import unquote, urlparse

PACKAGE_DIR = Path(__file__).resolve().parent
# installed from a wheel: the package's own conf/; a checkout (editable install, or PYTHONPATH): the top's conf/
CONF_DIR = PACKAGE_DIR / "conf" if (PACKAGE_DIR / "conf").is_dir() else PACKAGE_DIR.parent / "conf"
STUDIES = "harness.experiments"


def study(experiment: str) -> ModuleType | None:
    """The module of experiments/<experiment>.py (harness.experiments.<experiment>), None where there is none."""
    name = f"{STUDIES}.{experiment}"
    try:
        found = importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # harness.experiments itself absent: a checkout run without installing
        found = False
    return importlib.import_module(name) if found else None


def _distribution():
    from importlib import metadata

    try:
        return metadata.distribution("harness")
    except metadata.PackageNotFoundError:  # a checkout run without installing
        return None


def editable_checkout(dist=None) -> Path | None:
    """The checkout an editable install (`pip install -e`) runs from, None for any other install."""
    dist = dist or _distribution()
    info = json.loads((dist and dist.read_text("direct_url.json")) or "{}")
    if not info.get("dir_info", {}).get("editable"):
        return None
    checkout = Path(unquote(urlparse(info["url"]).path))
    return checkout if (checkout / "pyproject.toml").is_file() else None


def install_line(extra: str, declared: str) -> str:
    """The pip line for what the extra named `extra` adds, as fits this install: `pip install -e
    '<checkout>[extra]'` for an editable install, else the extra's own requirements; `declared` where
    the package has no such extra or is not installed."""
    dist = _distribution()
    if dist is None or extra not in (dist.metadata.get_all("Provides-Extra") or []):
        return declared
    checkout = editable_checkout(dist)
    if checkout is not None:
        return f"pip install -e '{checkout}[{extra}]'"
    marker = f'extra == "{extra}"'
    wanted = [r.split(";")[0].strip() for r in dist.requires or [] if marker in r]
    return "pip install " + " ".join(f"'{r}'" for r in wanted) if wanted else declared
