"""A static constant-time check of the `gpu` backend's kernels, over the PTX nvcc makes of them.

Owns: following secret values through each kernel's PTX (a flow-insensitive taint analysis
over virtual registers) and reporting every instruction whose memory address, branch or
guarding predicate depends on one.  Secret values are those loaded through a pointer derived
from a kernel parameter named secret (the key table `sa_keys`, the raw keys of `gcm_install`),
and everything computed from them: round keys, keystream, ciphertext, GHASH sums and tags.
Must not: claim more than PTX shows.  ptxas may still schedule or predicate differently (SASS);
values that go through memory and are read back lose their taint here (plaintext written by
one lane and read by another, local-memory spills); and the plaintext itself is not a source:
framing reads inner headers (public by protocol) with data-dependent addresses.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

#: Kernel -> indices of its parameters that point at secret memory.
SECRET_PARAMS: dict[str, frozenset[int]] = {
    "gcm_install": frozenset({0}),     # keys
    "gcm_batch": frozenset({8}),       # sa_keys
    "esp_seal": frozenset({10}),       # sa_keys
    "esp_open": frozenset({9}),        # sa_keys
}

_ENTRY = re.compile(r"\.entry\s+(\w+)\s*\((.*?)\)\s*(?:\.\w+[^{]*)?\{(.*?)\n\}", re.S)
_REG = re.compile(r"%[A-Za-z_][\w.]*")
_GUARD = re.compile(r"^@!?(%\w+)\s+")
# Ops through which a pointer stays a pointer (address arithmetic).
_POINTER_OPS = ("add", "sub", "mov", "cvta", "mad", "mul", "shl", "cvt")


@dataclass(frozen=True)
class Finding:
    kernel: str
    line: str
    why: str

    def __str__(self) -> str:
        return f"{self.kernel}: {self.why}: {self.line}"


def _split_operands(text: str) -> list[str]:
    out, depth, cur = [], 0, []
    for ch in text:
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if cur and "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def _parse(body: str):
    """(labels at each instruction index, instructions as (op, guard, operands, text))."""
    insts, labels = [], {}
    for raw in body.splitlines():
        line = raw.split("//", 1)[0].strip()
        if not line or line in ("{", "}") or line.startswith("."):
            continue
        if line.endswith(":"):
            labels[line[:-1]] = len(insts)
            continue
        line = line.rstrip(";").strip()
        guard = None
        m = _GUARD.match(line)
        if m:
            guard = m.group(1)
            line = line[m.end():]
        parts = line.split(None, 1)
        insts.append((parts[0], guard, _split_operands(parts[1]) if len(parts) > 1 else [], line))
    return labels, insts


def _regs(text: str) -> set[str]:
    return set(_REG.findall(text)) - {"%SP", "%SPL"}


def _compile(inst, secret_params: set):
    """(kind, dest, used, address) of one instruction for `_step`: kind "skip", "param" (a
    secret pointer parameter), "load" or "op" (pointer arithmetic when "op*")."""
    op, _, operands, _ = inst
    base = op.split(".")[0]
    if base in ("st", "bra", "ret", "bar", "exit", "call", "membar", "fence", "red", "prefetch") \
            or not operands:
        return ("skip", frozenset(), frozenset(), frozenset())
    dest = frozenset(_regs(operands[0]))
    if base == "ld":
        address = operands[-1]
        if op.startswith("ld.param") and any(p in address for p in secret_params):
            return ("param", dest, frozenset(), frozenset())
        return ("load", dest, frozenset(), frozenset(_regs(address)))
    used = frozenset(_regs(" ".join(operands[1:])))
    return ("op*" if base in _POINTER_OPS else "op", dest, used, frozenset())


def _step(code, pointer: set, tainted: set) -> None:
    """The effect of one instruction on the two sets, in place (strong update of its targets)."""
    kind, dest, used, address = code
    if kind == "skip":
        return
    pointer -= dest
    tainted -= dest
    if kind == "param":
        pointer |= dest
    elif kind == "load":
        if address & pointer:
            tainted |= dest
    else:
        if used & tainted:
            tainted |= dest
        if kind == "op*" and used & pointer:
            pointer |= dest


def audit_kernel(name: str, params: str, body: str, secret: frozenset[int],
                 sources: dict | None = None) -> list[Finding]:
    """Findings for one kernel whose parameters with indices `secret` point at secret memory:
    a forward data-flow analysis over its basic blocks (union where paths meet).  `sources`,
    when given, gets the number of loads of secret memory the analysis saw in the kernel (a
    check on the check: zero means it found nothing to follow)."""
    secret_params = {f"{name}_param_{i}" for i in secret}
    labels, insts = _parse(body)
    codes = [_compile(inst, secret_params) for inst in insts]
    starts = sorted({0, *labels.values(), *(i + 1 for i, (op, *_r) in enumerate(insts)
                                             if op.split(".")[0] in ("bra", "ret", "exit"))})
    starts = [s for s in starts if s < len(insts)]
    block_of = {s: k for k, s in enumerate(starts)}
    ends = starts[1:] + [len(insts)]
    succ: list[list[int]] = []
    for k, (s, e) in enumerate(zip(starts, ends)):
        op, guard, operands, _ = insts[e - 1]
        base = op.split(".")[0]
        nxt = [k + 1] if k + 1 < len(starts) else []
        if base == "bra":
            target = block_of[labels[operands[0]]]
            succ.append([target] + (nxt if guard is not None else []))
        elif base in ("ret", "exit"):
            succ.append([])
        else:
            succ.append(nxt)
    state_in = [(set(), set()) for _ in starts]
    work = [0]
    seen = {0}
    while work:
        k = work.pop()
        pointer, tainted = set(state_in[k][0]), set(state_in[k][1])
        for i in range(starts[k], ends[k]):
            _step(codes[i], pointer, tainted)
        for t in succ[k]:
            p_in, t_in = state_in[t]
            if t not in seen or not pointer <= p_in or not tainted <= t_in:
                seen.add(t)
                p_in |= pointer
                t_in |= tainted
                work.append(t)
    findings = []
    for k in sorted(seen):
        pointer, tainted = set(state_in[k][0]), set(state_in[k][1])
        for i in range(starts[k], ends[k]):
            op, guard, operands, line = insts[i]
            base = op.split(".")[0]
            if guard is not None and guard in tainted and base in ("bra", "ld", "st", "atom", "red", "call"):
                findings.append(Finding(name, line, f"{base} guarded by a secret predicate {guard}"))
            if base in ("ld", "st", "atom", "red", "prefetch"):
                address = next((o for o in operands if o.startswith("[")), "")
                if base == "ld" and sources is not None and _regs(address) & pointer:
                    sources[name] = sources.get(name, 0) + 1
                hot = _regs(address) & tainted
                if hot:
                    findings.append(Finding(name, line, f"address depends on secret {sorted(hot)}"))
            if base == "brx":
                findings.append(Finding(name, line, "indirect branch"))
            _step(codes[i], pointer, tainted)
    return findings


def audit(ptx: str, secret_params: dict[str, frozenset[int]] | None = None,
          sources: dict | None = None) -> list[Finding]:
    """Every finding in every kernel of `ptx` named in `secret_params` (default SECRET_PARAMS);
    a kernel named there but missing from the PTX is a finding too.  `sources`: see
    `audit_kernel`."""
    wanted = SECRET_PARAMS if secret_params is None else secret_params
    seen, findings = set(), []
    for m in _ENTRY.finditer(ptx):
        name = m.group(1)
        if name in wanted:
            seen.add(name)
            findings += audit_kernel(name, m.group(2), m.group(3), wanted[name], sources)
    findings += [Finding(k, "", "kernel not found in the PTX") for k in sorted(set(wanted) - seen)]
    return findings


__all__ = ["Finding", "SECRET_PARAMS", "audit", "audit_kernel"]
