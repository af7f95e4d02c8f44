#!/usr/bin/env python3
"""Code size of a .wasm by crate and by function (VMSTART-FINDINGS.md).

Usage: wasmsize.py FILE.wasm [TOP]
Needs an unstripped build for names (the `name` section), e.g.
  CARGO_PROFILE_RELEASE_STRIP=false CARGO_TARGET_DIR=target/vmstart-nostrip \
    nice -n 19 cargo build -j 1 --release --target wasm32-wasip1 -p missiongate-filter
Prints the sections, then code bytes and function counts grouped by crate (the first path segment
of the demangled name, generic impls attributed to the crate of the `impl`'s trait or type), then
the TOP largest functions.
"""
import collections
import re
import sys


def leb(b, i):
    r = s = 0
    while True:
        x = b[i]
        i += 1
        r |= (x & 0x7F) << s
        s += 7
        if x < 0x80:
            return r, i


def parse(path):
    b = open(path, "rb").read()
    assert b[:4] == b"\0asm"
    i = 8
    sections = []
    bodies = []
    names = {}
    n_imported_funcs = 0
    while i < len(b):
        sid = b[i]
        size, j = leb(b, i + 1)
        end = j + size
        name = None
        if sid == 0:
            nl, k = leb(b, j)
            name = b[k:k + nl].decode()
            if name == "name":
                k += nl
                while k < end:
                    sub = b[k]
                    sl, k2 = leb(b, k + 1)
                    if sub == 1:
                        cnt, m = leb(b, k2)
                        for _ in range(cnt):
                            idx, m = leb(b, m)
                            ln, m = leb(b, m)
                            names[idx] = b[m:m + ln].decode(errors="replace")
                            m += ln
                    k = k2 + sl
        elif sid == 2:
            cnt, k = leb(b, j)
            for _ in range(cnt):
                ml, k = leb(b, k)
                k += ml
                fl, k = leb(b, k)
                k += fl
                kind = b[k]
                k += 1
                if kind == 0:
                    _, k = leb(b, k)
                    n_imported_funcs += 1
                elif kind == 1:
                    k += 1
                    flags, k = leb(b, k)
                    _, k = leb(b, k)
                    if flags & 1:
                        _, k = leb(b, k)
                elif kind == 2:
                    flags, k = leb(b, k)
                    _, k = leb(b, k)
                    if flags & 1:
                        _, k = leb(b, k)
                elif kind == 3:
                    k += 2
        elif sid == 10:
            cnt, k = leb(b, j)
            for _ in range(cnt):
                fs, k2 = leb(b, k)
                bodies.append(k2 - k + fs)
                k = k2 + fs
        sections.append((sid, name, size))
        i = end
    return sections, bodies, names, n_imported_funcs


ESC = {"$LT$": "<", "$GT$": ">", "$RF$": "&", "$BP$": "*", "$C$": ",", "$LP$": "(", "$RP$": ")",
       "$SP$": "@"}


def demangle(n):
    """Rust legacy (`_ZN...E`) names fully; v0 (`_R...`) names as their identifiers joined by `::`."""
    if n.startswith("_ZN"):
        i, parts = 3, []
        while i < len(n) and n[i] != "E":
            m = re.match(r"\d+", n[i:])
            if not m:
                return n
            ln = int(m.group())
            i += len(m.group())
            parts.append(n[i:i + ln])
            i += ln
        if parts and re.fullmatch(r"h[0-9a-f]{16}", parts[-1]):
            parts.pop()
        out = []
        for p in parts:
            if p.startswith("_$"):
                p = p[1:]
            for k, v in ESC.items():
                p = p.replace(k, v)
            p = re.sub(r"\$u([0-9a-f]+)\$", lambda m: chr(int(m.group(1), 16)), p)
            out.append(p.replace("..", "::"))
        return "::".join(out)
    if n.startswith("_R"):
        # v0: identifiers are `<len>[_]<chars>`; skip disambiguators (`s<base62>_`) and back-references
        # (`B<base62>_`). Approximate, enough to attribute a function to its crate.
        out, i = [], 2
        while i < len(n):
            ch = n[i]
            if ch in "sB" and i > 0 and n[i - 1] in "NCXMYIB" and "_" in n[i:]:
                i = n.index("_", i) + 1
            elif ch.isdigit():
                m = re.match(r"\d+", n[i:])
                ln = int(m.group())
                i += len(m.group())
                if i < len(n) and n[i] == "_":
                    i += 1
                out.append(n[i:i + ln])
                i += ln
            else:
                i += 1
        return "::".join(x for x in out if x) or n
    return n


def crate_of(name):
    n = name
    # `<T as Trait>::f` / `<impl Trait for T>`: attribute to the type's crate (where the code comes from
    # for derives and generics), falling back to the trait's.
    m = re.match(r"^<(?:impl )?(?:&(?:mut )?)?(?:dyn )?\(?([A-Za-z_][A-Za-z0-9_]*)", n)
    if m:
        first = m.group(1)
    else:
        first = re.split(r"::|<|\s", n, maxsplit=1)[0]
    return first or n


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    sections, bodies, names, nimp = parse(path)
    ids = {0: "custom", 1: "type", 2: "import", 3: "function", 4: "table", 5: "memory", 6: "global", 7: "export",
           8: "start", 9: "elem", 10: "code", 11: "data", 12: "datacount"}
    print(f"## {path}\n\n| section | bytes |\n|---|---|")
    for sid, name, size in sections:
        print(f"| {ids.get(sid, sid)}{' ' + name if name else ''} | {size:,} |")
    total = sum(bodies)
    print(f"\n{len(bodies)} functions, {total:,} code bytes\n")
    by = collections.defaultdict(lambda: [0, 0])
    funcs = []
    for k, sz in enumerate(bodies):
        nm = names.get(nimp + k, f"func{nimp + k}")
        nm = demangle(nm)
        funcs.append((sz, nm))
        c = crate_of(nm)
        by[c][0] += sz
        by[c][1] += 1
    print("| crate | code bytes | % | functions |\n|---|---|---|---|")
    for c, (sz, n) in sorted(by.items(), key=lambda x: -x[1][0])[:top]:
        print(f"| {c} | {sz:,} | {100.0 * sz / total:.1f} | {n} |")
    print(f"\n| function | bytes |\n|---|---|")
    for sz, nm in sorted(funcs, reverse=True)[:top]:
        print(f"| `{nm[:150]}` | {sz:,} |")
    hist = collections.Counter()
    for sz, _ in funcs:
        hist[min(sz.bit_length(), 16)] += 1
    print("\nsize histogram (bytes < 2^k: count, bytes):")
    for k in sorted(hist):
        s = sum(sz for sz, _ in funcs if min(sz.bit_length(), 16) == k)
        print(f"  2^{k}: {hist[k]} functions, {s:,} bytes")


if __name__ == "__main__":
    main()
