"""Fuzz targets of ipsec-suite: one module per target, each with `test_one_input(data: bytes)`.

Run one with atheris from the repository root: `python3 -m fuzz.esp_unprotect fuzz/corpus/esp_unprotect`
(fuzz/README.md has the command lines); tests/robustness/test_fuzz_smoke.py runs every target
for a bounded number of inputs in CI.
"""
