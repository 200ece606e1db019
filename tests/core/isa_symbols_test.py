#!/usr/bin/env python3
"""Checks that a program linked against qkscope_core runs on any x86-64: every function in it
that uses an instruction beyond the baseline (VEX- or EVEX-encoded, ymm/zmm/mask registers, BMI,
popcnt) belongs to one of the engine's AVX2/AVX-512 variants (core/src/head_engine_<isa>.cpp),
which run only where the CPU has them. A template of the standard library instantiated by several
variants must resolve to the baseline copy; a flag like -march=native leaking into the library
shows here too.

Usage: isa_symbols_test.py OBJDUMP BINARY
"""
import re
import subprocess
import sys

# What marks a variant's own code: its namespace, or Eigen's namespace renamed for it (a
# template instantiated on those types carries the name in its signature).
ALLOWED = re.compile(r"isa_avx2|isa_avx512|Eigen_avx2|Eigen_avx512")
# Instructions a baseline x86-64 CPU lacks: VEX/EVEX mnemonics (v-prefixed, except the old
# verr/verw), and the BMI1/BMI2/LZCNT/POPCNT/MOVBE ones a -march flag would let the compiler use.
BEYOND = re.compile(
    r"^\s*[0-9a-f]+:\s+(?:(?!verr|verw)v[a-z0-9]+|andn|bextr|blsi|blsmsk|blsr|bzhi|mulx|pdep|pext|"
    r"rorx|sarx|shlx|shrx|tzcnt|lzcnt|popcnt|movbe)\b|%[yz]mm\d|%k[1-7]\b")


def main():
    objdump, binary = sys.argv[1], sys.argv[2]
    listing = subprocess.run([objdump, "-d", "-C", "--no-show-raw-insn", binary],
                             check=True, capture_output=True, text=True).stdout
    header = re.compile(r"^[0-9a-f]+ <(.*)>:$")
    function, offenders, variant_functions = None, {}, 0
    counted = set()
    for line in listing.splitlines():
        m = header.match(line)
        if m:
            function = m.group(1)
            continue
        if function is None or not BEYOND.search(line):
            continue
        # A clone (".isra", ".constprop", ".part", ".cold") is local to the object that made it
        # and called only from there: a variant's clone of a standard template is safe. (A flag
        # leaking into the baseline objects shows in their ordinary functions as well.)
        if ALLOWED.search(function) or "[clone ." in function:
            if function not in counted:
                counted.add(function)
                variant_functions += 1
            continue
        offenders.setdefault(function, line.strip())
    if offenders:
        print(f"{len(offenders)} functions outside the engine's variants use instructions "
              "beyond baseline x86-64:")
        for name, line in sorted(offenders.items())[:40]:
            print(f"  {name}\n      {line}")
        return 1
    # The check must see the variants, or it checks nothing.
    if variant_functions == 0:
        print("no AVX2/AVX-512 variant code found: is this binary linked with qkscope_core?")
        return 1
    print(f"ok: {variant_functions} functions with AVX2/AVX-512 code, all in the engine's variants")
    return 0


if __name__ == "__main__":
    sys.exit(main())
