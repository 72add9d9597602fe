"""lasp communicators for torch.distributed groups.

`comm_for(group)` returns the id of lasp's NCCL communicator of `group` (0 for no group or a
group of one rank), making it on first use: rank 0 of the group draws an NCCL unique id, the id
travels over the group itself (torch.distributed.broadcast_object_list), and every rank calls
ncclCommInitRank on its current CUDA device. Collective: every rank of the group must make its
first lasp call with that group at the same point. The communicator is cached per group for the
life of the process (or until `release(group)`), separate from torch's own NCCL communicator of
the group, so lasp's SP traffic never interleaves with torch's collectives.
"""
import os
import threading

import torch
import torch.distributed as dist

_lock = threading.Lock()
_comms = {}  # id(group) -> (group, device, lasp comm id)


def comm_for(group):
    if group is None:
        return 0
    from ._ops import _C, HAVE_EXTENSION, _IMPORT_ERROR
    if not HAVE_EXTENSION:
        raise ImportError(f"lasp_torch._C is not built: {_IMPORT_ERROR}")
    size = dist.get_world_size(group)
    if size == 1 and os.environ.get("LASP_TORCH_NCCL_SINGLE", "0") != "1":
        return 0  # (LASP_TORCH_NCCL_SINGLE=1: a 1-rank NCCL communicator, to test that path on one GPU)
    dev = torch.cuda.current_device()
    key = (id(group), dev)
    hit = _comms.get(key)
    if hit is not None and hit[0] is group:
        return hit[2]
    with _lock:
        hit = _comms.get(key)
        if hit is not None and hit[0] is group:
            return hit[2]
        if not _C.have_nccl():
            raise RuntimeError("lasp_torch was built without NCCL: group= needs NCCL (rebuild with nccl.h)")
        rank = dist.get_rank(group)
        obj = [_C.nccl_unique_id() if rank == 0 else None]
        src = dist.get_global_rank(group, 0) if hasattr(dist, "get_global_rank") else dist.distributed_c10d._get_global_rank(group, 0)
        dist.broadcast_object_list(obj, src=src, group=group)
        cid = int(_C.comm_create(obj[0], rank, size))
        _comms[key] = (group, dev, cid)
        return cid


def release(group=None):
    """Destroys lasp's communicator(s) of `group` (all groups when None). Collective."""
    from ._ops import _C
    with _lock:
        for key in list(_comms):
            g, _, cid = _comms[key]
            if group is None or g is group:
                _C.comm_destroy(cid)
                del _comms[key]


def sp_dp_groups(sp_size):
    """Splits the world into SP groups of `sp_size` consecutive ranks and DP groups of strided
    ranks (lasp::comm::split_sp_dp, math.md section 5): world 4, sp 2 -> SP (0,1) (2,3), DP (0,2)
    (1,3). Collective over the world (every rank creates every group, as torch requires).
    Returns (sp_group, dp_group) of this rank."""
    world = dist.get_world_size()
    if world % sp_size:
        raise ValueError(f"world size {world} is not a multiple of sp_size {sp_size}")
    rank = dist.get_rank()
    sp_group = dp_group = None
    for i in range(world // sp_size):
        ranks = list(range(i * sp_size, (i + 1) * sp_size))
        g = dist.new_group(ranks)
        if rank in ranks:
            sp_group = g
    for j in range(sp_size):
        ranks = list(range(j, world, sp_size))
        g = dist.new_group(ranks)
        if rank in ranks:
            dp_group = g
    return sp_group, dp_group
