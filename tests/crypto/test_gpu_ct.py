"""The `gpu` backend's kernels are constant-time as far as their PTX shows: no load, store or
branch whose address or predicate depends on key material or on what is computed from it
(`ipsec_plugins.gpu.ct_audit`), for every kernel (the register budget, GCM_MIN_BLOCKS, is
ptxas's business: the PTX is the same).  The check itself is shown to catch table lookups, branches and stores indexed by a
secret (negative controls).  Needs nvcc; skips without it.
"""
from __future__ import annotations

import shutil
import subprocess

import pytest

from ipsec_plugins.gpu import ct_audit

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")


def _ptx(code: str, tmp_path, *defines: str) -> str:
    cu = tmp_path / "k.cu"
    cu.write_text(code)
    out = tmp_path / "k.ptx"
    done = subprocess.run([NVCC, "-ptx", "-arch=sm_90", *defines, str(cu), "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out.read_text()


def test_gpu_kernels_have_no_secret_dependent_addresses_or_branches():
    from ipsec_plugins.gpu.cpu_launcher import build_ptx

    ptx = build_ptx().read_text()          # cached per source digest, shared with the compile test
    sources: dict = {}
    findings = ct_audit.audit(ptx, sources=sources)
    assert not findings, "\n".join(map(str, findings[:20]))
    # the analysis did follow key material in every kernel: round keys, powers of H
    assert set(sources) == set(ct_audit.SECRET_PARAMS) and min(sources.values()) >= 4, sources
    assert "ld.shared" not in ptx.split(".entry gcm_install")[0]          # no tables at all
    assert ".const" not in ptx


LEAKS = r"""
__device__ const unsigned TBL[256] = {1, 2, 3, 4};
extern "C" __global__ void leak_table(unsigned *out, const unsigned *key)
{ out[threadIdx.x] = TBL[key[threadIdx.x] & 0xff]; }
extern "C" __global__ void leak_shared(unsigned *out, const unsigned *key)
{
    __shared__ unsigned t[256];
    t[threadIdx.x] = threadIdx.x * 7;
    __syncthreads();
    out[threadIdx.x] = t[(key[0] >> 3) & 0xff];
}
extern "C" __global__ void leak_branch(unsigned *out, const unsigned *key)
{
    unsigned x = key[threadIdx.x];
    for (int i = 0; i < 64; ++i)
        if ((x >> (i & 31)) & 1)
            x = x * 3 + out[i];
    out[threadIdx.x] = x;
}
extern "C" __global__ void leak_store(unsigned *out, const unsigned *key)
{ out[(key[1] ^ key[2]) & 15] = 1; }
extern "C" __global__ void clean(unsigned *out, const unsigned *key)
{
    unsigned x = key[threadIdx.x];
    x = (x * 3) ^ (x >> 7) ^ ((x & 1) ? 5u : 9u);
    out[threadIdx.x] = x;
}
"""


def test_gpu_ct_audit_catches_secret_indexed_lookups_branches_and_stores(tmp_path):
    ptx = _ptx(LEAKS, tmp_path)
    names = ("leak_table", "leak_shared", "leak_branch", "leak_store", "clean")
    found = {name: ct_audit.audit(ptx, {name: frozenset({1})}) for name in names}
    for name in names[:-1]:
        assert found[name], f"{name} was not caught"
    assert not found["clean"], found["clean"]
    assert any("address depends on secret" in str(f) for f in found["leak_table"])
    assert any("guarded by a secret predicate" in str(f) or "address" in str(f) for f in found["leak_branch"])
    assert ct_audit.audit(ptx, {"no_such_kernel": frozenset({0})})[0].why == "kernel not found in the PTX"
