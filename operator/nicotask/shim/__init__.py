"""The REST shim: the NICo task API (cancel, get, list) on top of NicoTask resources.

`create_app()` builds the FastAPI app; `shim_main()` serves it with uvicorn.
The dev token issuer (`nicotask dev token`) is dev tooling: nicotask_dev.shim.devissuer.
"""
