"""nd_fairseq: Negative Distillation (Li et al., NAACL 2022) as a fairseq plugin.

Use with the fairseq command-line tools: ``--user-dir nd_fairseq``. Loaded that way (fairseq is
imported first), the package registers the ``negative_distillation`` task and criterion, the
baseline criteria, the ``transformer_nd_dialog`` architectures, routes fairseq's checkpoint
loading through the safe ``weights_only=True`` loader, and keeps the last (incomplete) batch that
fairseq 0.12 drops (see :mod:`nd_fairseq.compat.fairseq_fixes`).

The command-line tools that do not need fairseq (``nd-prepare``, ``nd-filter``, ``nd-spm``,
``nd-eval``, ``nd-pneg``) import this package without importing fairseq or torch, so they start in
a fraction of a second. If this package is imported before fairseq in a Python session, the
registration runs as soon as fairseq is imported (``nd_fairseq.register()`` also does it).
``from nd_fairseq import DialogueModel`` (a trained model that answers messages) imports fairseq
then, not before.
"""

import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

_registered = False


def register() -> None:
    """Register everything with fairseq (idempotent)."""
    global _registered
    if _registered:
        return
    from .compat import distributed_cpu, fairseq_fixes, safe_load, threads

    safe_load.install()
    fairseq_fixes.install()
    distributed_cpu.install()
    threads.configure()
    from . import criterions, models, tasks  # noqa: F401  (registration side effects)
    from .chat import tokenizer  # noqa: F401  (--tokenizer nd_prepare for fairseq-interactive)

    _registered = True


class _RegisterWhenFairseqIsImported(importlib.abc.MetaPathFinder):
    """One-shot import hook: registers the plugin right after ``import fairseq`` completes.

    Without it, importing ``nd_fairseq`` first (e.g. ``from nd_fairseq.losses import ...``) and
    fairseq later would leave the plugin unregistered: fairseq's ``--user-dir`` handling skips a
    module that is already in ``sys.modules``.
    """

    def find_spec(self, name, path, target=None):
        if name != "fairseq":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            exec_module = spec.loader.exec_module

            def exec_then_register(module):
                exec_module(module)
                register()

            spec.loader.exec_module = exec_then_register
        return spec


def __getattr__(name):
    # PEP 562: ``from nd_fairseq import DialogueModel`` imports fairseq and torch only when asked,
    # so the tools that need neither keep starting without them
    if name == "DialogueModel":
        from .chat.model import DialogueModel

        return DialogueModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if "fairseq" in sys.modules:  # imported by fairseq's --user-dir (or after fairseq in Python)
    register()
elif not any(isinstance(f, _RegisterWhenFairseqIsImported) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWhenFairseqIsImported())
