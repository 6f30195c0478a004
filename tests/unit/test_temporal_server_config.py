"""The Temporal server of the local environment (devenv/temporalserver.py): its config,
derived from the module's development-postgres12.yaml, and how it is chosen."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nicotask_dev.devenv import ports, temporalserver
from nicotask_dev.devenv.env import DevEnv

# The parts of go.temporal.io/server v1.32.2's config/development-postgres12.yaml we change.
BASE = yaml.safe_load("""
log: {stdout: true, level: info}
persistence:
  defaultStore: postgres-default
  visibilityStore: postgres-visibility
  numHistoryShards: 4
  datastores:
    postgres-default:
      sql: {pluginName: postgres12, databaseName: temporal, connectAddr: "127.0.0.1:5432",
            connectProtocol: tcp, user: temporal, password: temporal}
    postgres-visibility:
      sql: {pluginName: postgres12, databaseName: temporal_visibility,
            connectAddr: "127.0.0.1:5432", connectProtocol: tcp, user: temporal,
            password: temporal}
global:
  membership: {maxJoinDuration: 30s, broadcastAddress: "127.0.0.1"}
  pprof: {port: 7936}
  metrics:
    prometheus: {framework: tally, timerType: histogram, listenAddress: "127.0.0.1:8000"}
services:
  frontend: {rpc: {grpcPort: 7233, membershipPort: 6933, bindOnLocalHost: true, httpPort: 7243}}
  matching: {rpc: {grpcPort: 7235, membershipPort: 6935, bindOnLocalHost: true}}
  history: {rpc: {grpcPort: 7234, membershipPort: 6934, bindOnLocalHost: true}}
  worker: {rpc: {grpcPort: 7239, membershipPort: 6939, bindOnLocalHost: true}}
clusterMetadata:
  currentClusterName: active
  clusterInformation:
    active: {enabled: true, initialFailoverVersion: 1, rpcName: frontend,
             rpcAddress: "localhost:7233"}
archival:
  history: {state: enabled, enableRead: true}
  visibility: {state: enabled, enableRead: true}
namespaceDefaults:
  archival: {history: {state: disabled, URI: "file:///tmp/temporal_archival/development"}}
dynamicConfigClient: {filepath: config/dynamicconfig/development-sql.yaml, pollInterval: 10s}
""")


def test_every_port_is_ours_on_loopback_and_the_database_is_ours(tmp_path: Path) -> None:
    chosen = ports.pick_ports(list(temporalserver.PORT_NAMES))
    cfg = temporalserver.server_config(BASE, chosen, "127.0.0.1", tmp_path)
    used = []
    for service in cfg["services"].values():
        rpc = service["rpc"]
        assert rpc["bindOnIP"] == "127.0.0.1" and not rpc["bindOnLocalHost"]
        used += [rpc["grpcPort"], rpc["membershipPort"]] + [
            rpc[k] for k in ("httpPort",) if k in rpc
        ]
    assert cfg["services"]["frontend"]["rpc"]["grpcPort"] == chosen["temporal"]
    metrics = cfg["global"]["metrics"]["prometheus"]["listenAddress"]
    used.append(int(metrics.rsplit(":", 1)[1]))
    assert sorted(used) == sorted(v for k, v in chosen.items() if k != "postgres")
    assert not {7233, 7234, 7235, 7239, 7243, 6933, 8000} & set(used)
    assert "pprof" not in cfg["global"]
    for store in cfg["persistence"]["datastores"].values():
        assert store["sql"]["connectAddr"] == f"127.0.0.1:{chosen['postgres']}"
        assert store["sql"]["pluginName"] == "postgres12"
    # PostgreSQL is both the store and visibility, as in the module's file.
    assert cfg["persistence"]["visibilityStore"] == "postgres-visibility"
    info = cfg["clusterMetadata"]["clusterInformation"]["active"]
    assert info["rpcAddress"] == f"127.0.0.1:{chosen['temporal']}"
    assert cfg["archival"]["history"]["state"] == "disabled"
    assert "namespaceDefaults" not in cfg  # nothing written under /tmp
    assert cfg["dynamicConfigClient"]["filepath"].startswith(str(tmp_path))
    assert cfg["log"]["level"] == "warn"
    assert BASE["services"]["frontend"]["rpc"]["grpcPort"] == 7233  # base left as it was


def test_the_dev_server_stays_the_default_and_server_is_asked_for() -> None:
    assert temporalserver.mode({}) == "dev"
    assert temporalserver.mode({"NICOTASK_TEMPORAL": "server"}) == "server"
    assert temporalserver.mode({"NICOTASK_TEMPORAL": " Server "}) == "server"
    with pytest.raises(RuntimeError, match="NICOTASK_TEMPORAL='postgres'"):
        temporalserver.mode({"NICOTASK_TEMPORAL": "postgres"})


def test_server_mode_picks_the_server_ports_and_needs_postgres_alive(tmp_path: Path) -> None:
    env = DevEnv(tmp_path, environ={"NICOTASK_TEMPORAL": "server"})
    state = env._fresh_state({})
    assert state["temporal_mode"] == "server"
    assert set(temporalserver.PORT_NAMES) <= set(state["ports"])
    assert "temporal_ui" not in state["ports"]
    dev = DevEnv(tmp_path / "dev", environ={})._fresh_state({})
    assert dev["temporal_mode"] == "dev" and "postgres" not in dev["ports"]
    external = DevEnv(
        tmp_path / "ext",
        environ={"NICOTASK_TEMPORAL": "server", "NICOTASK_TEMPORAL_ADDRESS": "t:7233"},
    )._fresh_state({})
    assert external["temporal_mode"] == "external" and "postgres" not in external["ports"]


def test_as_user_wraps_only_when_a_user_is_given() -> None:
    assert temporalserver.as_user(None, ["postgres", "-D", "d"]) == ["postgres", "-D", "d"]
    user = temporalserver.pwd.getpwuid(0)
    argv = temporalserver.as_user(user, ["postgres"])
    assert argv[-2:] == ["--", "postgres"] and "--reuid=0" in argv


def test_membership_ports_fit_the_servers_smallint_column(tmp_path: Path) -> None:
    """The server stores membership ports as a signed 16-bit number (PostgreSQL
    smallint): an ephemeral port (32768 and up) stops it at start."""
    state = DevEnv(tmp_path, environ={"NICOTASK_TEMPORAL": "server"})._fresh_state({})
    low = {name: state["ports"][name] for name in temporalserver.LOW_PORTS}
    assert len(low) == 4 and all(20000 <= port <= 32767 for port in low.values())
    again = DevEnv(tmp_path, environ={"NICOTASK_TEMPORAL": "server"})._fresh_state(state)
    assert {name: again["ports"][name] for name in low} == low  # kept across down/up
