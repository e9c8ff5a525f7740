"""fairseq-train with a probe: after every update, each rank appends what it holds to a JSONL file.

    [torchrun --nproc_per_node 2] python tests/helpers/train_probe.py OUT_DIR FAIRSEQ_TRAIN_ARGS...

Records: rank, update number, the logged (all-reduced) loss, a float64 checksum of all model
parameters and the first few values, and the teacher this rank's criterion loaded. Used by the
distributed tests to compare ranks with each other and with a single-process run.
"""

import json
import os
import sys

import torch


def main():
    out_dir = sys.argv[1]
    sys.argv = ["fairseq-train"] + sys.argv[2:]
    from fairseq.trainer import Trainer

    original = Trainer.train_step

    def train_step(self, samples, raise_oom=False):
        logging_output = original(self, samples, raise_oom)
        params = torch.cat([p.detach().double().flatten() for p in self.model.parameters()])
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        teacher = getattr(self.get_criterion(), "teacher", None)
        record = {
            "rank": rank,
            "world": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
            "update": self.get_num_updates(),
            "loss": float(logging_output["loss"]) if logging_output else None,
            "checksum": float(params.sum()),
            "abs": float(params.abs().sum()),
            "head": params[:8].tolist(),
            "teacher": getattr(teacher, "path", None),
            "teacher_training": bool(teacher.model.training) if teacher is not None else None,
        }
        with open(os.path.join(out_dir, f"rank{rank}.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        return logging_output

    Trainer.train_step = train_step
    from fairseq_cli.train import cli_main

    cli_main()


if __name__ == "__main__":
    main()
