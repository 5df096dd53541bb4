#!/usr/bin/env python3
"""Key pairs, JWKS files and signed tokens for the JWT bench scenarios (stdlib + the openssl CLI).

    bench/mint.py DIR    writes DIR/{rs256,es256}.{pem,jwks.json,token}, and DIR/es256.tokens: one
                         ES256 token per line for subjects user-0 .. user-255 (the authz scenario)

The tokens are valid for a day, for issuer https://idp.bench and audience bench-api, with role reader.
"""
import base64
import json
import os
import subprocess
import sys
import time


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def openssl(*args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *args], input=data, check=True, capture_output=True).stdout


def der_ecdsa_to_raw(sig: bytes, size: int) -> bytes:
    """ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } to the fixed-width r || s of JWS."""
    assert sig[0] == 0x30
    i = 2 if sig[1] < 0x80 else 2 + (sig[1] & 0x7F)
    out = b""
    for _ in range(2):
        assert sig[i] == 0x02
        n = sig[i + 1]
        v = sig[i + 2 : i + 2 + n].lstrip(b"\0")
        out += v.rjust(size, b"\0")
        i += 2 + n
    return out


def mint(directory: str, alg: str) -> None:
    pem = os.path.join(directory, f"{alg.lower()}.pem")
    kid = f"bench-{alg.lower()}"
    if alg == "RS256":
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", pem)
        modulus = openssl("rsa", "-in", pem, "-noout", "-modulus").decode().strip().split("=")[1]
        jwk = {"kty": "RSA", "n": b64(bytes.fromhex(modulus)), "e": "AQAB"}
    else:
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", pem)
        point = openssl("pkey", "-in", pem, "-pubout", "-outform", "DER")[-65:]
        assert point[0] == 0x04
        jwk = {"kty": "EC", "crv": "P-256", "x": b64(point[1:33]), "y": b64(point[33:])}
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    with open(os.path.join(directory, f"{alg.lower()}.jwks.json"), "w") as f:
        json.dump({"keys": [jwk]}, f)

    with open(os.path.join(directory, f"{alg.lower()}.token"), "w") as f:
        f.write(token(pem, alg, kid, "user-42"))
    if alg == "ES256":
        with open(os.path.join(directory, "es256.tokens"), "w") as f:
            f.write("".join(token(pem, alg, kid, f"user-{i}") + "\n" for i in range(256)))


def token(pem: str, alg: str, kid: str, sub: str) -> str:
    now = int(time.time())
    header = b64(json.dumps({"alg": alg, "typ": "JWT", "kid": kid}).encode())
    claims = b64(json.dumps({
        "iss": "https://idp.bench", "aud": "bench-api", "sub": sub, "client_id": "bench-client",
        "iat": now, "exp": now + 86400, "scope": "orders:read orders:write",
        "realm_access": {"roles": ["reader"]},
    }).encode())
    signing_input = f"{header}.{claims}".encode()
    sig = openssl("dgst", "-sha256", "-sign", pem, data=signing_input)
    if alg == "ES256":
        sig = der_ecdsa_to_raw(sig, 32)
    return f"{header}.{claims}.{b64(sig)}"


if __name__ == "__main__":
    for alg in ("RS256", "ES256"):
        mint(sys.argv[1], alg)
