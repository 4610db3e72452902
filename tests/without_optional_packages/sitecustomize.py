"""Put this folder first on PYTHONPATH and ``import fedml``, ``nibabel``, ``cryptography`` and
``tensorboard`` fail in that interpreter and every process it starts, as on a bare GPU machine
that has torch but none of these (tests/test_layering.py runs gpu_check's smoke mode this way)."""

import sys

BLOCKED = ("fedml", "nibabel", "cryptography", "tensorboard")


class _NotInstalled:
    """A meta-path finder that refuses the blocked packages (and their submodules)."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by {__file__})", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
