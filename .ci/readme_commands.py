"""Print the README's two set-up commands, one per line: the first two ``bash`` blocks under "## Set up".

The README is the single source of truth: CI runs exactly what a newcomer copies from it.

    python .ci/readme_commands.py [README.md]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def setup_commands(readme: str) -> list[str]:
    """Return the first two ``bash`` blocks of the "## Set up" section: one command line each."""
    match = re.search(r"^## Set up\s*$(.*?)(?=^## |\Z)", readme, flags=re.M | re.S)
    if match is None:
        raise SystemExit("README.md has no '## Set up' section")
    blocks = re.findall(r"^```bash\n(.*?)^```", match.group(1), flags=re.M | re.S)[:2]
    commands = []
    for block in blocks:
        lines = [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if len(lines) != 1:
            raise SystemExit(f"each set-up block must hold one command line; got {lines!r}")
        commands.append(lines[0].strip())
    if len(commands) != 2:
        raise SystemExit(f"expected two set-up commands (install + demo, install + tests); got {commands!r}")
    return commands


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "README.md"
    print("\n".join(setup_commands(path.read_text(encoding="utf-8"))))
