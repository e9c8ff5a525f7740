"""fairseq's own distributed data-parallel training on CPU (gloo), without forking fairseq.

fairseq 0.12 assumes CUDA for multi-process training: under ``torchrun`` it divides the rank by
``torch.cuda.device_count()`` (ZeroDivisionError on a CPU machine), single-node start-up asserts
``world_size <= device_count()``, it spawns ``min(device_count(), world_size)`` = 0 workers, and
its ``pytorch_ddp`` wrapper passes ``device_ids=[device_id]`` which DistributedDataParallel
rejects for CPU modules. On a machine without CUDA (and only there) these four places get the
CPU behaviour; the trainer, gradient all-reduce, data sharding and checkpointing are fairseq's own::

    torchrun --nproc_per_node 2 $(which fairseq-train) DATA --cpu --distributed-backend gloo ...
    fairseq-train DATA --cpu --distributed-world-size 2 ...           # fairseq spawns the workers

The backend defaults to gloo when no GPU is present (NCCL needs GPUs).
"""

import functools
import logging
import os
import warnings

import torch

logger = logging.getLogger(__name__)


def _no_cuda() -> bool:
    return torch.cuda.device_count() == 0


def _use_gloo(cfg) -> None:
    if getattr(cfg, "distributed_backend", None) == "nccl":
        logger.info("no CUDA device: using the gloo backend for distributed training")
        cfg.distributed_backend = "gloo"


def _torchrun_init(original):
    @functools.wraps(original)
    def infer(cfg):
        if not _no_cuda():
            return original(cfg)
        cfg.distributed_init_method = "env://"
        cfg.distributed_world_size = int(os.environ["WORLD_SIZE"])
        cfg.distributed_rank = int(os.environ["RANK"])
        cfg.device_id = 0  # no device to pick (a device id > 0 would make fairseq call cuda.set_device)
        cfg.distributed_no_spawn = True  # torchrun started the processes
        _use_gloo(cfg)

    return infer


def _single_node_init(original):
    @functools.wraps(original)
    def infer(cfg):
        if not _no_cuda():
            return original(cfg)
        if cfg.distributed_port <= 0:
            import random

            cfg.distributed_port = random.randint(10000, 60000)
        cfg.distributed_init_method = f"tcp://localhost:{cfg.distributed_port}"
        _use_gloo(cfg)

    return infer


def _infer_init_method(original):
    @functools.wraps(original)
    def infer_init_method(cfg, force_distributed=False):
        if _no_cuda() and cfg.distributed_world_size == 1 and int(os.environ.get("WORLD_SIZE", 1)) > 1 \
                and "RANK" in os.environ:
            # under torchrun the world size is known; fairseq's default (GPU count, 1 here) is not it
            cfg.distributed_world_size = int(os.environ["WORLD_SIZE"])
        original(cfg, force_distributed)
        if _no_cuda() and cfg.distributed_world_size > 1 and not cfg.distributed_no_spawn:
            from omegaconf import open_dict

            with open_dict(cfg):
                cfg.distributed_num_procs = cfg.distributed_world_size

    return infer_init_method


def _call_main(original):
    @functools.wraps(original)
    def call_main(cfg, main, **kwargs):
        dt = cfg.distributed_training
        if not _no_cuda() or dt.distributed_world_size <= 1:
            return original(cfg, main, **kwargs)
        from fairseq.distributed import utils as distributed_utils

        if dt.distributed_init_method is None:
            distributed_utils.infer_init_method(dt)
        if dt.distributed_init_method is None or dt.distributed_no_spawn:
            return original(cfg, main, **kwargs)
        # fairseq would spawn min(cuda.device_count(), world_size) = 0 workers: spawn world_size
        kwargs["start_rank"] = dt.distributed_rank
        dt.distributed_rank = None
        torch.multiprocessing.spawn(fn=distributed_utils.distributed_main, args=(main, cfg, kwargs),
                                    nprocs=dt.distributed_world_size, join=True)

    return call_main


def _cpu_ddp(original):
    @functools.wraps(original)
    def DistributedFairseqModel(args, model, process_group, device):
        if device.type != "cpu" or args.ddp_backend not in ("c10d", "pytorch_ddp") or getattr(args, "tpu", False):
            return original(args, model, process_group, device)
        from torch.nn.parallel import DistributedDataParallel

        from fairseq.distributed import ModuleProxyWrapper

        with warnings.catch_warnings():
            # newer torch renames broadcast_buffers; fairseq's GPU path passes it the same way
            warnings.simplefilter("ignore", FutureWarning)
            wrapped = DistributedDataParallel(
                module=model.to(device), device_ids=None, output_device=None,  # CPU modules
                broadcast_buffers=args.broadcast_buffers, bucket_cap_mb=args.bucket_cap_mb,
                process_group=process_group, find_unused_parameters=args.find_unused_parameters,
                gradient_as_bucket_view=args.gradient_as_bucket_view)
        return ModuleProxyWrapper(wrapped)

    return DistributedFairseqModel


def install() -> None:
    """Patch the CUDA-only spots of fairseq's distributed start-up (idempotent)."""
    from fairseq import models
    from fairseq.distributed import utils as du
    from fairseq.models import distributed_fairseq_model as dfm

    if getattr(du, "_nd_cpu_distributed", False):
        return
    du._infer_torch_distributed_launch_init = _torchrun_init(du._infer_torch_distributed_launch_init)
    du._infer_single_node_init = _single_node_init(du._infer_single_node_init)
    du.infer_init_method = _infer_init_method(du.infer_init_method)
    du.call_main = _call_main(du.call_main)
    wrapper = _cpu_ddp(dfm.DistributedFairseqModel)
    dfm.DistributedFairseqModel = wrapper
    models.DistributedFairseqModel = wrapper
    du._nd_cpu_distributed = True
