"""The README's configuration table names every setting, with its default."""

from __future__ import annotations

import re
from pathlib import Path

from nicotask.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _rows() -> dict[str, str]:
    rows = {}
    for line in README.read_text().splitlines():
        m = re.match(r"\| `(NICOTASK_[A-Z_]+|KUBECONFIG)` \|([^|]*)\|", line)
        if m:
            rows[m.group(1)] = m.group(2).strip()
    return rows


def test_every_setting_is_documented_with_its_default() -> None:
    rows = _rows()
    for name, field in Settings.model_fields.items():
        var = "KUBECONFIG" if name == "kubeconfig" else f"NICOTASK_{name.upper()}"
        assert var in rows, f"README configuration table lacks {var}"
        default = field.get_default(call_default_factory=True)
        if default in (None, "", False) or var == "KUBECONFIG":
            continue
        shown = rows[var]
        expected = str(default).lower() if isinstance(default, bool) else str(default)
        if isinstance(default, float) and default.is_integer():
            expected = str(int(default))
        assert expected in shown, f"{var}: README says {shown!r}, settings say {default!r}"


def test_no_documented_setting_is_unknown() -> None:
    known = {f"NICOTASK_{n.upper()}" for n in Settings.model_fields} | {"KUBECONFIG"}
    extra = set(_rows()) - known
    # The devenv switches are documented in the same file but are not process settings.
    assert extra <= {"NICOTASK_USE_EXISTING_CLUSTER"}, extra
