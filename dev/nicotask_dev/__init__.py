"""nicotask-dev: the repository's dev tooling, kept out of the runtime package and the image.

devenv/          the local environment (`nicotask dev ...`, `make run`), Go tool builds,
                 the image build, pytest fixtures (devenv/testing.py)
shim/            the dev token issuer (devissuer.py) and the shim's test helpers (testing.py)
crdgen.py        models -> crds/*.yaml, the chart's CRDs, docs/resource.md (`nicotask crds`)
admission.py     the cancel-requested-by admission policy the local environment installs
cli.py           `nicotask crds` (registered with `nicotask dev` as `nicotask.cli` entry points)
"""
