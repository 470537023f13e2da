"""Every fuzz target of fuzz/ for a bounded number of inputs: a sample of its checked-in seed
corpus plus random mutations of it, with a fixed seed.  The targets check their own
invariants (only documented errors, state unchanged by a drop, a valid input still accepted
afterwards); a failure here is a finding: reproduce it with the target's test_one_input."""
from __future__ import annotations

import importlib
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fuzz._harness import corpus, mutate  # noqa: E402

#: target -> (seeds sampled, mutants): a few seconds in all on the CI machine.
BUDGET = {
    "esp_unprotect": (60, 300),
    "ah_unprotect": (40, 200),
    "wire_ip": (13, 400),
    "fragments": (15, 150),
    "pcap_reader": (1, 300),
    "sa_config": (17, 150),
    "connections_config": (18, 120),
    "ike_payloads": (30, 400),
    "ike_endpoint": (30, 60),
}


@pytest.mark.parametrize("target", sorted(BUDGET))
def test_target_smoke(target):
    module = importlib.import_module(f"fuzz.{target}")
    seeds = corpus(target)
    assert seeds, f"fuzz/corpus/{target} is empty: run python3 -m fuzz.make_corpus"
    n_seeds, n_mutants = BUDGET[target]
    rng = random.Random(f"smoke-{target}")
    for data in rng.sample(seeds, min(n_seeds, len(seeds))):
        module.test_one_input(data)
    for _ in range(n_mutants):
        module.test_one_input(mutate(rng.choice(seeds), rng))


def test_every_target_has_a_corpus_and_a_budget():
    targets = {p.stem for p in (ROOT / "fuzz").glob("*.py")
               if not p.stem.startswith("_") and p.stem not in ("make_corpus",)}
    assert targets == set(BUDGET)
    for target in targets:
        assert hasattr(importlib.import_module(f"fuzz.{target}"), "test_one_input")
