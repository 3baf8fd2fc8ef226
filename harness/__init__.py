"""Cross-entropy stability harness: the Python API (see harness.api) behind `python -m harness`.

    import harness
    run = harness.run("precision_sweep", ["frameworks=[numpy]"])   # -> harness.api.Run
    harness.load(run.dir); harness.measure(fn, "torch")
    from harness.testing import assert_accurate

Importing harness is light: no framework (or pandas) loads until one of these is used.
"""

__all__ = ["Run", "load", "measure", "run"]


def __getattr__(name: str):
    if name in __all__:
        from harness import api

        return getattr(api, name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
