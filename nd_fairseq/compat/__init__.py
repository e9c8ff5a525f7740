"""The runtime patches this plugin applies to fairseq 0.12 (and torch >= 2.6), one module each.

:func:`nd_fairseq.register` installs all four once fairseq is imported (by ``--user-dir
nd_fairseq``, or ``import fairseq`` after ``import nd_fairseq``); a tool that never imports fairseq
never loads them. They are installed once per process (a fairseq function already patched is
left alone).

* :mod:`.safe_load`: fairseq reads checkpoints with ``torch.load`` without ``weights_only``, which
  torch >= 2.6 refuses for every fairseq checkpoint, and which unpickles anything when
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set. ``checkpoint_utils.load_checkpoint_to_cpu`` is
  replaced by a loader passing ``weights_only=True`` with an allow-list of the types fairseq
  checkpoints hold, and reporting a damaged, truncated or foreign file in one line.
* :mod:`.fairseq_fixes`: fairseq behaviour that would silently corrupt results or lose work: the
  last batch dropped by ``batch_by_size``, the ``task_state`` not restored on resume (the running
  statistics of the baseline criteria), the distributed checkpoint broadcast refused by torch,
  checkpoint files copied without write-then-rename, plugin input errors shown as tracebacks in
  the fairseq tools, and ``--no-repeat-ngram-size`` doing nothing on CPU.
* :mod:`.distributed_cpu`: fairseq's multi-process training assumes CUDA; on a machine without it
  (only there) start-up, worker spawning and the DDP wrapper get the CPU (gloo) behaviour.
* :mod:`.threads`: on a shared CPU machine torch's one-thread-per-core default makes an update
  several times slower; unless the user chose a count, torch gets the cores that are free.
"""
