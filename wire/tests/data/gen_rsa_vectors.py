#!/usr/bin/env python3
"""RS256 / PS256 test vectors for wire/tests/rsa_vectors.rs, made with pyca/cryptography (OpenSSL),
an implementation independent of the RustCrypto `rsa` crate the filter verifies with.

    python3 gen_rsa_vectors.py > rsa_vectors.json      (run in this directory)

Keys are fresh on every run and PS256 signatures are randomized, so the output differs each time;
the committed file is one run (pyca/cryptography 48.0.0, OpenSSL 3.0). Each case says what was done
to it, in the Wycheproof manner: `result` is `valid` or `invalid`, `comment` why.
"""
import base64
import json

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def uint(i: int) -> bytes:
    return i.to_bytes((i.bit_length() + 7) // 8, "big")


def jwk(key, kid, alg=None):
    pub = key.public_key().public_numbers()
    j = {"kty": "RSA", "kid": kid, "use": "sig", "n": b64(uint(pub.n)), "e": b64(uint(pub.e))}
    if alg:
        j["alg"] = alg
    return j


def pss(salt):
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt)


def sign(key, alg, data, salt=32, digest=None):
    digest = digest or hashes.SHA256()
    if alg == "RS256":
        return key.sign(data, padding.PKCS1v15(), digest)
    return key.sign(data, pss(salt), digest)


def signing_input(alg, kid, claims):
    header = {"alg": alg, "typ": "at+jwt", "kid": kid}
    return b64(json.dumps(header, separators=(",", ":")).encode()) + "." + b64(
        json.dumps(claims, separators=(",", ":")).encode()
    )


keys = {
    "rsa2048": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "rsa3072": rsa.generate_private_key(public_exponent=65537, key_size=3072),
    "other2048": rsa.generate_private_key(public_exponent=65537, key_size=2048),
}
short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
short2047 = None
while short2047 is None:  # a modulus of exactly 2047 bits: the boundary below the minimum
    k = rsa.generate_private_key(public_exponent=65537, key_size=2047)
    if k.public_key().public_numbers().n.bit_length() == 2047:
        short2047 = k

claims = {"iss": "https://as.example", "aud": "https://api.partner.example", "exp": 1900000000,
          "mission": {"id": "m-1", "issuer": "https://as.example"}}
tests = []


def case(comment, key, alg, sig_fn, result, input_fn=None):
    si = signing_input(alg, key, claims)
    signed = input_fn(si) if input_fn else si
    sig = sig_fn(keys[key], alg, si.encode())
    tests.append({"tcId": len(tests) + 1, "comment": comment, "key": key, "alg": alg,
                  "jws": signed + "." + b64(sig), "result": result})


def flip(i, bit=0x01):
    def f(k, alg, data):
        s = bytearray(sign(k, alg, data))
        s[i] ^= bit
        return bytes(s)
    return f


n_bytes = lambda k: uint(k.public_key().public_numbers().n)

for alg in ("RS256", "PS256"):
    for key in ("rsa2048", "rsa3072"):
        case(f"{alg}, {key}: valid", key, alg, sign, "valid")
    case(f"{alg}: last signature byte modified", "rsa2048", alg, flip(-1), "invalid")
    case(f"{alg}: first signature byte modified", "rsa2048", alg, flip(0, 0x80), "invalid")
    case(f"{alg}: middle signature byte modified", "rsa2048", alg, flip(128, 0x10), "invalid")
    case(f"{alg}: message modified (one payload character)", "rsa2048", alg, sign, "invalid",
         input_fn=lambda si: si[:-2] + ("A" if si[-2] != "A" else "B") + si[-1])
    case(f"{alg}: signed by another key", "rsa2048", alg,
         lambda k, a, d: sign(keys["other2048"], a, d), "invalid")
    case(f"{alg}: signature one byte short", "rsa2048", alg, lambda k, a, d: sign(k, a, d)[1:], "invalid")
    case(f"{alg}: signature with a zero byte prepended", "rsa2048", alg,
         lambda k, a, d: b"\x00" + sign(k, a, d), "invalid")
    case(f"{alg}: signature is the modulus itself (s >= n)", "rsa2048", alg, lambda k, a, d: n_bytes(k), "invalid")
    case(f"{alg}: signature all zero", "rsa2048", alg, lambda k, a, d: bytes(len(n_bytes(k))), "invalid")
    case(f"{alg}: hashed with SHA-384 instead of SHA-256", "rsa2048", alg,
         lambda k, a, d: sign(k, a, d, digest=hashes.SHA384()), "invalid")

case("PS256: the signature is RSASSA-PKCS1-v1_5 (an RS256 signature under a PS256 header)", "rsa2048", "PS256",
     lambda k, a, d: sign(k, "RS256", d), "invalid")
case("RS256: the signature is RSASSA-PSS (a PS256 signature under an RS256 header)", "rsa2048", "RS256",
     lambda k, a, d: sign(k, "PS256", d), "invalid")
case("PS256: salt length 0 (RFC 7518 §3.5 requires 32)", "rsa2048", "PS256",
     lambda k, a, d: sign(k, a, d, salt=0), "invalid")
case("PS256: salt length 20", "rsa2048", "PS256", lambda k, a, d: sign(k, a, d, salt=20), "invalid")
case("PS256: salt length 64", "rsa2048", "PS256", lambda k, a, d: sign(k, a, d, salt=64), "invalid")
case("PS256: maximum salt length", "rsa2048", "PS256",
     lambda k, a, d: sign(k, a, d, salt=padding.PSS.MAX_LENGTH), "invalid")
case("PS256: MGF1 with SHA-1 instead of SHA-256", "rsa2048", "PS256",
     lambda k, a, d: k.sign(d, padding.PSS(mgf=padding.MGF1(hashes.SHA1()), salt_length=32), hashes.SHA256()),
     "invalid")

out = {
    "note": "Generated by gen_rsa_vectors.py with pyca/cryptography (OpenSSL); see README.md.",
    "keys": {name: jwk(k, name) for name, k in keys.items()},
    "refused_keys": [
        {"comment": "1024-bit modulus (below the 2048-bit minimum)", "jwk": jwk(short, "rsa1024")},
        {"comment": "2047-bit modulus (one bit below the minimum)", "jwk": jwk(short2047, "rsa2047")},
    ],
    "refused_key_signature": {
        "comment": "RS256 token validly signed by the 1024-bit key: never verified, the key is refused",
        "jws": signing_input("RS256", "rsa1024", claims) + "." +
               b64(sign(short, "RS256", signing_input("RS256", "rsa1024", claims).encode())),
    },
    "tests": tests,
}
print(json.dumps(out, indent=1))
