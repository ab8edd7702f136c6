"""Write constraints.txt: exact versions of every installed package that heal-rag[dev] needs.

Walks the requirements of heal-rag (pyproject.toml) with the given extras through the installed distributions'
metadata (markers evaluated for this interpreter), so unrelated packages in the environment are left out,
and pins each to its installed version. Local version labels are dropped (``torch 2.13.0+cpu`` is pinned as
``torch==2.13.0``, which pip matches with either the CPU or the CUDA wheel).

Usage (after ``pip install -e ".[dev]"`` in the environment to freeze):
    python tools/make_constraints.py [--extras dev] [--out constraints.txt]
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import platform
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]

HEADER = """\
# Versions heal-rag is tested with (CI installs with `pip install -c constraints.txt -e ".[dev]"`).
# Exactly the packages that heal-rag[dev] needs, pinned to what was installed on {python} / {platform}.
# Regenerate after changing dependencies: install with `pip install -e ".[dev]"` (CPU torch first:
# `pip install torch==<version>`), then run `python tools/make_constraints.py`.
"""


def closure(requirements: list[Requirement]) -> dict[str, str]:
    """Installed name -> version of every distribution reachable from ``requirements``."""
    pinned: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    stack = [(req, frozenset()) for req in requirements]
    while stack:
        req, parent_extras = stack.pop()
        environment = {"extra": ""}
        if req.marker is not None and not any(
            req.marker.evaluate({**environment, "extra": extra}) for extra in (parent_extras or {""})
        ):
            continue
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            print(f"warning: {req.name} is required but not installed; left out", file=sys.stderr)
            continue
        pinned[name] = dist.version.split("+", 1)[0]
        for line in dist.requires or []:
            child = Requirement(line)
            stack.append((child, frozenset(req.extras)))
    return pinned


def main() -> None:
    """Write the constraints file."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--extras", default="dev", help="comma-separated extras of heal-rag to include")
    parser.add_argument("--out", type=Path, default=REPO / "constraints.txt")
    args = parser.parse_args()

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    name = canonicalize_name(project["name"])
    optional = project.get("optional-dependencies", {})
    requirements = [Requirement(line) for line in project["dependencies"]]
    extras = [e.strip() for e in args.extras.split(",") if e.strip()]
    pending, done = list(extras), set()
    while pending:  # expand self-references such as "heal-rag[eval,llm]"
        extra = pending.pop()
        if extra in done:
            continue
        done.add(extra)
        for line in optional.get(extra, []):
            req = Requirement(line)
            if canonicalize_name(req.name) == name:
                pending.extend(req.extras)
            else:
                requirements.append(req)
    pinned = closure(requirements)
    pinned.pop(name, None)
    lines = [HEADER.format(python=f"Python {platform.python_version()}", platform=sys.platform)]
    lines += [f"{pkg}=={version}" for pkg, version in sorted(pinned.items())]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(pinned)} pins to {args.out}")


if __name__ == "__main__":
    main()
