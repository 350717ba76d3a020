import os
import subprocess
import sys

import torch

from kr import cores


def test_registry_counts_live_processes_and_drops_dead_ones(tmp_path):
    me = cores.register(tmp_path)
    assert me is not None and me.name == f"{os.getpid()}.pid"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / f"{child.pid}.pid").write_text(cores._start_time(child.pid) or "")
        (tmp_path / "999999999.pid").write_text("1")      # a process that is gone
        (tmp_path / f"{os.getppid()}.pid").write_text("0")  # a live pid, but started at another time
        assert cores.live_processes(tmp_path) == sorted([os.getpid(), child.pid])
        assert not (tmp_path / "999999999.pid").exists()
    finally:
        child.kill()
        child.wait()
    assert cores.live_processes(tmp_path) == [os.getpid()]


def test_claim_takes_a_share_of_the_cores(monkeypatch, tmp_path):
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(cores, "registry", lambda: tmp_path)
        monkeypatch.setattr(cores, "available_cores", lambda: 8)
        monkeypatch.delenv("KR_THREADS", raising=False)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        others = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
                  for _ in range(3)]
        try:
            for p in others:
                (tmp_path / f"{p.pid}.pid").write_text(cores._start_time(p.pid) or "")
            assert cores.claim() == 2 and torch.get_num_threads() == 2  # 8 cores, 4 processes
            assert cores.claim(3) == 3                                  # --threads wins
            monkeypatch.setenv("OMP_NUM_THREADS", "1")
            assert cores.claim() == 1
            monkeypatch.setenv("KR_THREADS", "5")
            assert cores.claim() == 5
        finally:
            for p in others:
                p.kill()
                p.wait()
        monkeypatch.delenv("KR_THREADS")
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert cores.claim() == 8  # alone again
    finally:
        torch.set_num_threads(before)
