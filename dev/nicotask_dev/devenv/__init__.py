"""Local environment: kube-apiserver + etcd, Temporal dev server, emulated BMCs.

`DevEnv(run_dir).up()` starts them, `nicotask dev up|down|status|env` is the CLI.
See `nicotask_dev.devenv.env` for the variables that select real infrastructure.
"""

from .env import DevEnv, default_run_dir
from .process import ProcessRecord, StartError

__all__ = ["DevEnv", "ProcessRecord", "StartError", "default_run_dir"]
