"""A workload whose "crash" implementation kills the process measuring it, and whose "hang" one never
returns: what an illegal address or a deadlocked kernel does to a sweep.  Imported by the isolated
sweep's worker process; not registered, so it appears nowhere else."""
import os
import time

import torch

from bench.workload import Shapes, Workload, namespace

crashy = Workload("crashy", "a workload with a crashing and a hanging implementation", ("B", "T"), "T",
                  Shapes(*[[dict(B=1, T=4), dict(B=1, T=8)]] * 4), lambda s, m: 1e6, lambda s, d, m: 1e3,
                  lambda s: s["T"], lambda s, dtype, device, grad: namespace(x=torch.ones(s["T"], requires_grad=grad)),
                  register=False)


@crashy.impl(baseline=True)
def fine(inp):
    return lambda: inp.x * 2


@crashy.impl()
def crash(inp):
    if inp.x.shape[0] == 4:
        os._exit(7)
    return lambda: inp.x * 2


@crashy.impl()
def hang(inp):
    if inp.x.shape[0] == 8:
        time.sleep(3600)
    return lambda: inp.x * 2
