"""`nicotask operator|worker|shim|dev|crds`: one entry point for every process."""

from __future__ import annotations

import sys

USAGE = """usage: nicotask COMMAND [ARGS]

commands:
  operator   run the kopf operator (NicoTask lifecycle and cancellation)
  worker     run the Temporal worker (operation rules against Redfish BMCs)
  shim       run the REST shim (the NICo task API on top of NicoTask)
  dev        local environment: dev up|down|status|env|token
  crds       generate crds/*.yaml from the models (--check: fail on drift)
"""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "operator":
        from nicotask.operator_main import operator_main

        return operator_main(rest)
    if command == "worker":
        from nicotask.temporal.worker import worker_main

        return worker_main(rest)
    if command == "shim":
        from nicotask.shim.server import shim_main

        return shim_main(rest)
    if command == "dev":
        if rest and rest[0] == "token":
            from nicotask.shim.devissuer import token_main

            return token_main(rest[1:])
        from nicotask.devenv.cli import dev_main

        return dev_main(rest)
    if command == "crds":
        from nicotask.crdgen import crds_main

        return crds_main(rest)
    print(f"nicotask: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
