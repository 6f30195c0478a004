"""Emulated BMCs: the sushy-tools Redfish emulator with its fake driver.

The fake driver applies a power change 1 to 11 seconds after the request, as
real hardware would not be instant either; poll for the new state.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import bcrypt

from nicotask_dev.devenv.process import venv_binary

USER = "admin"
PASSWORD = "password"  # emulator credential, printed by `dev up`
_UUID_NS = uuid.UUID("6f1d3a52-7c1e-4a8e-9a55-6e6963747364")


def system(name: str, component_type: str, power_state: str = "Off") -> dict[str, Any]:
    """One emulated system; its UUID (the Redfish System id) is fixed by its name."""
    sid = str(uuid.uuid5(_UUID_NS, name))
    mac_tail = sid.replace("-", "")[:10]
    mac = "52:54:" + ":".join(mac_tail[i : i + 2] for i in range(0, 8, 2))
    return {
        "uuid": sid,
        "name": name,
        "power_state": power_state,
        "external_notifier": False,
        "nics": [{"mac": mac, "ip": ""}],
        "type": component_type,
    }


def default_systems() -> list[dict[str, Any]]:
    """Ten systems: six compute trays, two NVLink switches, two power shelves."""
    out = [system(f"compute-{i}", "compute") for i in range(6)]
    out += [system(f"nvswitch-{i}", "nvswitch") for i in range(2)]
    out += [system(f"powershelf-{i}", "powershelf") for i in range(2)]
    return out


def public_systems(systems: list[dict[str, Any]], base_url: str) -> list[dict[str, Any]]:
    """The view of the systems stored in state.json: id, name, type, Redfish path and URL."""
    return [
        {
            "id": s["uuid"],
            "name": s["name"],
            "type": s.get("type", ""),
            "path": f"/redfish/v1/Systems/{s['uuid']}",
            "url": f"{base_url}/redfish/v1/Systems/{s['uuid']}",
        }
        for s in systems
    ]


def htpasswd_line(user: str, password: str) -> str:
    digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
    return f"{user}:{digest}\n"


def config_text(systems: list[dict[str, Any]], auth_file: Path, state_dir: Path) -> str:
    """The emulator's config file (Python syntax, read by Flask's from_pyfile)."""
    driver_systems = [{k: v for k, v in s.items() if k != "type"} for s in systems]
    return (
        "# written by nicotask dev; regenerated on every start\n"
        "SUSHY_EMULATOR_FAKE_DRIVER = True\n"
        f"SUSHY_EMULATOR_FAKE_SYSTEMS = {driver_systems!r}\n"
        f"SUSHY_EMULATOR_AUTH_FILE = {str(auth_file)!r}\n"
        f"SUSHY_EMULATOR_STATE_DIR = {str(state_dir)!r}\n"
        "SUSHY_EMULATOR_FEATURE_SET = 'full'\n"
    )


def write_config(
    directory: Path, systems: list[dict[str, Any]], user: str = USER, password: str = PASSWORD
) -> Path:
    """Write config, htpasswd and a fresh state folder; return the config path.

    The state folder is emptied so every start begins from the configured
    power states (and a changed system list leaves no stale systems behind).
    """
    directory.mkdir(parents=True, exist_ok=True)
    auth = directory / "htpasswd"
    auth.write_text(htpasswd_line(user, password))
    auth.chmod(0o600)
    state = directory / "state"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()
    cfg = directory / "emulator.conf"
    cfg.write_text(config_text(systems, auth, state))
    return cfg


def emulator_binary() -> Path:
    return venv_binary(
        "sushy-emulator", "no `sushy-emulator`: install the dev extras (sushy-tools)"
    )


def emulator_argv(binary: Path, config: Path, port: int, host: str = "127.0.0.1") -> list[str]:
    return [str(binary), "--config", str(config), "--interface", host, "--port", str(port)]
