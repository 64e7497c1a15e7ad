"""helpers.distributed: the launcher Lab 09 runs its ranks with, and its
measurement utilities. Fast: each launch forks a few gloo ranks for < 1 s."""
import os
import time

import pytest
import torch
import torch.distributed as dist

from helpers import distributed as hd


def _rank_sum(rank, world_size, scale):
    t = torch.tensor([float(rank)])
    dist.all_reduce(t)
    return {"rank": rank, "world": world_size, "sum": t * scale, "pid": os.getpid()}


def test_launch_returns_results_by_rank():
    # A matmul in the parent first: forked ranks must still compute.
    torch.randn(256, 256) @ torch.randn(256, 256)
    results = hd.launch(_rank_sum, 3, 2.0, timeout=30)
    assert [r["rank"] for r in results] == [0, 1, 2]
    assert all(r["world"] == 3 for r in results)
    assert all(torch.equal(r["sum"], torch.tensor([6.0])) for r in results)
    assert len({r["pid"] for r in results} | {os.getpid()}) == 4


def test_launch_runs_locally_defined_functions():
    # Notebook cells define functions in __main__; a closure is as unimportable.
    offset = 10

    def closure(rank, world_size):
        return rank + offset

    assert hd.launch(closure, 2, timeout=30) == [10, 11]


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone as far as we care; launch() joins its children.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def _record_pid(tmpdir, rank):
    with open(os.path.join(tmpdir, f"pid{rank}"), "w") as f:
        f.write(str(os.getpid()))


def _hang_in_collective(rank, world_size, tmpdir):
    _record_pid(tmpdir, rank)
    if rank == 0:  # rank 1 never joins this all_reduce
        dist.all_reduce(torch.ones(1))
    else:
        time.sleep(60)


def _pids(tmpdir, n):
    return [int(open(os.path.join(tmpdir, f"pid{r}")).read()) for r in range(n)]


def test_hanging_collective_is_killed_with_clear_error(tmp_path):
    start = time.monotonic()
    with pytest.raises(hd.DistributedTimeoutError) as info:
        hd.launch(_hang_in_collective, 2, str(tmp_path), timeout=3)
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "_hang_in_collective" in message and "after 3 s" in message
    assert "rank(s) [0, 1]" in message and "collective" in message
    assert not any(_pid_alive(pid) for pid in _pids(tmp_path, 2))


def _raise_on_rank_1(rank, world_size, tmpdir):
    _record_pid(tmpdir, rank)
    if rank == 1:
        raise ValueError("shape mismatch in rank one")
    # Rank 0 would wait forever for rank 1 without the launcher's clean-up.
    dist.all_reduce(torch.ones(1))
    time.sleep(60)


def test_exception_in_one_rank_is_reported_and_all_ranks_stop(tmp_path):
    start = time.monotonic()
    with pytest.raises(hd.DistributedError) as info:
        hd.launch(_raise_on_rank_1, 3, str(tmp_path), timeout=30)
    assert not isinstance(info.value, hd.DistributedTimeoutError)
    assert time.monotonic() - start < 10, "the other ranks were not stopped promptly"
    message = str(info.value)
    assert "failed on rank 1 of 3" in message
    assert "Traceback" in message and "ValueError: shape mismatch in rank one" in message
    assert "_raise_on_rank_1" in message  # the frame of the failing function
    assert not any(_pid_alive(pid) for pid in _pids(tmp_path, 3))


def _return_lambda(rank, world_size):
    return lambda: rank


def test_unpicklable_result_says_what_to_return():
    with pytest.raises(hd.DistributedError, match="cannot be sent back"):
        hd.launch(_return_lambda, 2, timeout=30)


def _count(rank, world_size):
    t = torch.ones(10)
    chunks = [torch.ones(5) for _ in range(world_size)]
    with hd.count_collectives() as log:
        dist.all_reduce(t)
        dist.all_gather(chunks, torch.ones(5))
        if rank == 0:
            dist.send(torch.ones(3), dst=1)
        elif rank == 1:
            dist.recv(torch.empty(3), src=0)
    dist.all_reduce(t)  # outside the block: not counted
    return log.calls


def test_count_collectives_logs_payload_and_ring_bytes():
    logs = hd.launch(_count, 2, timeout=30)
    assert logs[0] == [("all_reduce", 40, 40.0), ("all_gather", 40, 20.0), ("send", 12, 12)]
    assert logs[1] == [("all_reduce", 40, 40.0), ("all_gather", 40, 20.0), ("recv", 12, 0)]
    assert dist.all_reduce.__name__ == "all_reduce"  # parent untouched


def test_tensor_bytes_counts_values_and_shared_storage_once():
    p = torch.nn.Parameter(torch.zeros(100))
    big = torch.zeros(50)
    state = {p: {"exp_avg": torch.zeros(100), "view": big[:10], "whole": big, "step": 3}}
    assert hd.tensor_bytes(state) == 400 + 200  # the key `p` is not optimizer state


def _stage_timing(rank, world_size, n):
    stage = hd.make_pipeline_stages(world_size, 4, fwd_s_per_sample=0.01, bwd_s_per_sample=0.02)[rank]
    x = torch.randn(n, 4, requires_grad=True)
    start = time.perf_counter()
    stage(x).sum().backward()
    return time.perf_counter() - start, stage.busy_s, x.grad is not None


def test_controlled_stage_costs_its_sleep_per_sample():
    for elapsed, busy, has_grad in hd.launch(_stage_timing, 2, 5, timeout=30):
        # 5 samples: 0.05 s forward + 0.10 s backward, all counted as busy.
        assert 0.15 <= busy <= elapsed < 0.3
        assert has_grad


def test_stages_are_identical_for_a_seed():
    a = hd.make_pipeline_stages(3, 8, seed=1)
    b = hd.make_pipeline_stages(3, 8, seed=1)
    assert all(torch.equal(x.linear.weight, y.linear.weight) for x, y in zip(a, b))
    assert not torch.equal(a[0].linear.weight, a[1].linear.weight)


def _rank(rank, world_size):
    return rank


def test_port_taken_by_another_process_is_retried(monkeypatch):
    import socket
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        ports = iter([squatter.getsockname()[1]])
        real_free_port = hd.free_port
        monkeypatch.setattr(hd, "free_port", lambda: next(ports, None) or real_free_port())
        assert hd.launch(_rank, 2, timeout=30) == [0, 1]
