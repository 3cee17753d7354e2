"""PyTorch cross-replica sum: `torch.distributed` all-reduce with a gradient.

Under `DistributedDataParallel` (launched by `torchrun`, one process per
device) each process holds its own slice of the global batch. The sum over
the processes of the default group is one `all_reduce` of the tensors packed
into a flat vector, wrapped in an autograd function whose backward pass
all-reduces the gradient, as `torch.nn.SyncBatchNorm` does: the statistics
of process $r$ depend on every process's examples, so the gradient reaching
them is the sum of every process's upstream gradient.

Without an initialized process group of more than one process the sum is the
identity. Every process must call the same sums in the same order, forward
and backward, which the ops guarantee: the number of all-reduces depends on
the layer only, never on the data.
"""

import torch
import torch.distributed as dist


def _group_size():
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()


def replicas_active():
    """Whether `cross_replica_sum` sums over more than one process here."""
    return _group_size() > 1


class _AllReduceSum(torch.autograd.Function):
    """`all_reduce(SUM)` whose backward all-reduces the incoming gradient."""

    @staticmethod
    def forward(ctx, flat):
        summed = flat.clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        return summed

    @staticmethod
    def backward(ctx, grad):
        summed = grad.contiguous().clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        return summed


def cross_replica_sum(tensors):
    """Each tensor summed over the processes (one all-reduce for all of them).

    The tensors must share a dtype and a device; scalars are allowed.
    """
    tensors = list(tensors)
    if not replicas_active():
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    summed = _AllReduceSum.apply(flat)
    out, start = [], 0
    for t in tensors:
        out.append(summed[start : start + t.numel()].reshape(t.shape))
        start += t.numel()
    return out


def gather_from_processes(value):
    """`[value of process 0, value of process 1, ...]` (any picklable value); `[value]` on one process."""
    if _group_size() <= 1:
        return [value]
    values = [None] * _group_size()
    dist.all_gather_object(values, value)
    return values


def average_over_replicas(variables):
    """Sets each variable to its mean over the processes (one all-reduce each); the number of processes.

    Under DDP a buffer updated from each process's own batch (statistics not synchronized) differs between the
    processes; every process must call this at the same point.
    """
    processes = _group_size()
    if processes > 1:
        for variable in variables:
            summed = variable.value.detach().clone()
            dist.all_reduce(summed, op=dist.ReduceOp.SUM)
            variable.assign(summed / processes)
    return processes


def device_shards():
    """Number of device slices a layer's batch stands for: always 1 on PyTorch.

    A process's tensor is that process's own batch.
    """
    return 1
