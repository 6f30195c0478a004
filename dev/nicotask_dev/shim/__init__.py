"""Dev-only companions of nicotask.shim: the dev token issuer and the test helpers."""
