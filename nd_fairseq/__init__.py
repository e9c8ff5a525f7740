"""nd_fairseq: Negative Distillation (Li et al., NAACL 2022) as a fairseq plugin.

Use with the fairseq command-line tools: ``--user-dir nd_fairseq``. Loaded that way (fairseq is
imported first), the package registers the ``negative_distillation`` task and criterion, the
baseline criteria, the ``transformer_nd_dialog`` architectures, and routes fairseq's checkpoint
loading through the safe ``weights_only=True`` loader.

The command-line tools that do not need fairseq (``nd-prepare``, ``nd-filter``, ``nd-spm``,
``nd-eval``, ``nd-pneg``) import this package without importing fairseq or torch, so they start in
a fraction of a second. In Python, ``nd_fairseq.register()`` does the registration explicitly.
"""

import sys

__version__ = "0.1.0"

_registered = False


def register() -> None:
    """Register everything with fairseq (idempotent)."""
    global _registered
    if _registered:
        return
    from . import safe_load

    safe_load.install()
    from . import criterions, models, tasks  # noqa: F401  (registration side effects)

    _registered = True


if "fairseq" in sys.modules:  # imported by fairseq's --user-dir (or after fairseq in Python)
    register()
