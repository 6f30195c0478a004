"""`kubectl nico`: cancel (one task or many), rerun, report and wait for NicoTasks.

Installed as the console script `kubectl-nico`, so kubectl finds it on PATH:

    kubectl nico cancel TASK... [-n NS] [--mode Terminate|Graceful] [--reason TEXT]
    kubectl nico cancel (-l SELECTOR | --rack RACK | --all) [-A] [--mode ...] [--reason ...]
                        [--dry-run] [-y/--yes] [--concurrency 32]
    kubectl nico rerun TASK [-n NS]
    kubectl nico report TASK [-n NS] [-o table|json]
    kubectl nico wait TASK [-n NS] [--for=finished|Succeeded|Failed|Terminated|Running|...]
                      [--timeout=60s]

The kubeconfig is --kubeconfig, else $KUBECONFIG, else ~/.kube/config; the
namespace is -n, else the current context's namespace, else `default`.

Exit codes: 0 done; 1 timed out, (wait) the task finished in another status than
the one awaited, (cancel) a task was refused or not found, or the confirmation was
declined; 2 usage error, task not found (rerun, report, wait) or API error.

Modules: cli (flags), commands (API calls), bulk (cancel: selection, plan, summary),
rerun (names and links), report (rendering), common (statuses, --for, --timeout).
"""

from .cli import Invocation, execute, main, plugin

__all__ = ["Invocation", "execute", "main", "plugin"]
