"""Data-parallel training on the CPU with gloo: gradient averaging, the ranks' agreement check,
and ``torchrun`` runs of the engine (one checkpoint set, stop and resume exactly)."""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

from conftest import ROOT
import engine
from distributed import Distributed


def _two_rank_step(rank: int, out_dir: str) -> None:
    # A file store: no rank hosts a TCP store that the other still needs while leaving.
    torch.distributed.init_process_group("gloo", init_method=f"file://{out_dir}/store", rank=rank, world_size=2)
    dist = Distributed(rank, 2)
    dist.start(torch.device("cpu"))
    try:
        layer = torch.nn.Linear(1, 1, bias=False)
        layer.weight.data.fill_(1.0)
        state = engine.TrainState(argparse.Namespace(amp="off", max_iterations=1), torch.device("cpu"),
                                  {"seg": torch.optim.SGD(layer.parameters(), lr=1.0)}, dist)
        # d(w x)/dw = x: rank 0 sees x = 1, rank 1 x = 2, so the averaged step is w = 1 - 1.5.
        state.optimize(layer(torch.tensor([[float(rank + 1)]])).sum(), "seg")
        result = {"weight": layer.weight.item(), "all": dist.all(rank == 0), "any": dist.any(rank == 1),
                  "gathered": dist.gather(rank * 10)}
        dist.check_identical(layer)
        if rank == 1:
            layer.weight.data += 1e-6
        try:
            dist.check_identical(layer)
            result["mismatch"] = None
        except RuntimeError as e:
            result["mismatch"] = str(e)
        with open(os.path.join(out_dir, f"{rank}.json"), "w") as f:
            json.dump(result, f)
        dist.barrier()
    finally:
        dist.stop()
    # gloo's threads can abort the interpreter's own teardown (a rare SIGABRT after the work is
    # done and written); leave without it.
    os._exit(0)


def test_gradients_are_averaged_over_ranks_and_a_weight_mismatch_is_caught(tmp_path):
    mp.spawn(_two_rank_step, args=(str(tmp_path),), nprocs=2)
    results = [json.load(open(tmp_path / f"{r}.json")) for r in (0, 1)]
    for r in results:
        assert r["weight"] == pytest.approx(-0.5)
        assert r["all"] is False and r["any"] is True and r["gathered"] == [0, 10]
        assert r["mismatch"] is not None and "weights differ" in r["mismatch"]


def test_a_single_process_is_not_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    dist = Distributed.from_env()
    assert not dist.enabled and dist.is_main
    assert dist.all(True) and not dist.any(False) and dist.gather(3) == [3]


def torchrun_cmd(root, out, *extra):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            os.path.join(ROOT, "code", "train.py"), "--method", "pce", "--root_path", root, "--out_dir", str(out),
            "--patch_size", "32", "32", "--batch_size", "2", "--num_workers", "0", "--device", "cpu",
            "--no_progress", "--max_iterations", "40", "--val_interval", "20", "--save_every", "5", *extra]


def test_torchrun_trains_on_two_ranks_writes_once_and_resumes_exactly_after_sigterm(tmp_path, phantom_root):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(torchrun_cmd(phantom_root, tmp_path / "ref"), check=True, env=env, capture_output=True)
    ref = tmp_path / "ref"
    assert sorted(os.listdir(ref)) == [".lock", "best.json", "best.pth", "config.json", "last.pth", "log.txt", "tb"]
    log = (ref / "log.txt").read_text()
    assert "2 processes of batch 2, effective batch 4" in log and log.count("val dice") == 2
    ckpt = torch.load(ref / "last.pth", weights_only=False)
    assert ckpt["world_size"] == 2 and len(ckpt["rng_ranks"]) == 2 and ckpt["iteration"] == 40
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())

    run = tmp_path / "run"
    proc = subprocess.Popen(torchrun_cmd(phantom_root, run), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "last.pth").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
    proc.wait(timeout=120)
    stopped_at = torch.load(run / "last.pth", weights_only=False)["iteration"]
    assert 0 < stopped_at < 40
    subprocess.run(torchrun_cmd(phantom_root, run, "--resume"), check=True, env=env, capture_output=True)
    final, expected = (torch.load(p / "last.pth", weights_only=False)["model"] for p in (run, ref))
    assert final.keys() == expected.keys() and all(torch.equal(final[k], expected[k]) for k in final)


def test_a_run_of_two_ranks_is_not_resumed_by_one_process(tmp_path, phantom_root):
    from conftest import tiny_cfg
    from methods import get_method

    pce = get_method("pce")
    run = tmp_path / "run"
    engine.train(tiny_cfg(pce, phantom_root, run), pce)
    ckpt = torch.load(run / "last.pth", weights_only=False)
    ckpt["world_size"] = 2
    torch.save(ckpt, run / "last.pth")
    with pytest.raises(ValueError, match="trained by 2 process.*--nproc_per_node 2"):
        engine.train(tiny_cfg(pce, phantom_root, run, "--resume"), pce)


def test_s2l_ranks_keep_one_memory_of_every_rank_s_slices(tmp_path, phantom_root):
    # Each rank EMA-updated only the memories of its own slices, and each checkpoint gave every
    # rank rank 0's buffers: rank 1's updates were lost (missing from the saved memory), exit 0.
    from dataloaders.acdc import TrainBatchSampler

    cmd = torchrun_cmd(phantom_root, tmp_path / "run", "--max_iterations", "4", "--val_interval", "4")
    cmd[cmd.index("pce")] = "s2l"
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
    memory = torch.load(tmp_path / "run" / "last.pth", weights_only=False)["model"]["memory"]
    n = len(memory)
    filled = set(torch.nonzero(memory.reshape(n, -1).any(1)).flatten().tolist())
    seen = {i for rank in (0, 1) for it in range(4)
            for i, _ in TrainBatchSampler(n, 2, 2022, 0, rank, 2).batch(it)}
    assert filled == seen
