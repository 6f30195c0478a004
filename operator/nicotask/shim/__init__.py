"""The REST shim: the NICo task API (cancel, get, list) on top of NicoTask resources.

`create_app()` builds the FastAPI app; `shim_main()` serves it with uvicorn;
`devissuer.token_main()` prints a dev token the shim trusts.
"""
