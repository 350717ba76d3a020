import subprocess
import sys

import torch

from kr.seeding import derive_seed, make_generator


def test_derived_seeds_are_stable_across_processes():
    code = "from kr.seeding import derive_seed; print(derive_seed(0, 'teacher', 'epoch', 3))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={"PYTHONHASHSEED": str(h)}).stdout.strip() for h in (1, 2)}
    assert outs == {str(derive_seed(0, "teacher", "epoch", 3))}


def test_known_value_pins_the_derivation():
    # Changing the derivation silently would change every run's numbers: pin one value.
    assert derive_seed(0, "teacher") == derive_seed(0, "teacher")
    assert 0 <= derive_seed(0, "teacher") < 2**63
    assert derive_seed(0, "teacher") == 5759748334204182893


def test_different_keys_and_roots_differ():
    seeds = {derive_seed(r, k, e) for r in (0, 1) for k in ("a", "b") for e in (0, 1)}
    assert len(seeds) == 8


def test_generator_is_explicit():
    a = torch.rand(3, generator=make_generator(5))
    torch.manual_seed(123)  # the global RNG must not matter
    b = torch.rand(3, generator=make_generator(5))
    assert torch.equal(a, b)
