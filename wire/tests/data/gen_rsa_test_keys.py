#!/usr/bin/env python3
"""Private RSA keys for tests only (the core tests, the test kit's stand-in authority): generating
2048-bit keys in debug builds and in Wasm is slow, so a few are fixed here. Never use them elsewhere.

    python3 gen_rsa_test_keys.py > rsa_test_keys.json

Each key is its two primes in hex (e = 65537): `SigningKey::rsa_from_primes`.
"""
import json

from cryptography.hazmat.primitives.asymmetric import rsa

out = {"note": "TEST KEYS ONLY, public in this repository. Made by gen_rsa_test_keys.py (pyca/cryptography)."}
for name, bits in [("a2048", 2048), ("b2048", 2048), ("c2048", 2048), ("short1024", 1024)]:
    k = rsa.generate_private_key(public_exponent=65537, key_size=bits).private_numbers()
    out[name] = {"bits": bits, "p": format(k.p, "x"), "q": format(k.q, "x")}
print(json.dumps(out, indent=1))
