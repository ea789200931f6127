"""methods/common/ranks.py: a method's own parameters get the mean gradient over ranks (2 gloo processes)."""
import json
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from methods.common.ranks import average_grads, world_size


def _rank(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        w, unused, idle = (torch.nn.Parameter(torch.zeros(k)) for k in (3, 2, 1))
        w.grad = torch.full((3,), float(rank + 1))       # rank 0: 1s, rank 1: 2s
        if rank == 1:
            unused.grad = torch.full((2,), 4.0)          # only rank 1 has a gradient here
        average_grads([w, unused, idle])                    # idle: no gradient on any rank
        with open(os.path.join(out_dir, f"{rank}.json"), "w") as f:
            json.dump(torch.cat([w.grad, unused.grad]).tolist() + [idle.grad is None, world_size()], f)
    finally:
        dist.destroy_process_group()


def test_gradients_are_averaged_across_two_processes(tmp_path):
    mp.spawn(_rank, args=(29541, str(tmp_path)), nprocs=2, join=True)
    out = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    assert out[0] == out[1] == [1.5, 1.5, 1.5, 2.0, 2.0, True, 2]


def test_one_process_leaves_gradients_alone():
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([1.0, 3.0])
    average_grads([p])
    assert p.grad.tolist() == [1.0, 3.0] and world_size() == 1
