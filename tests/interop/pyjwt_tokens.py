"""Mints one token per algorithm with PyJWT (an independent JOSE
implementation) and prints {"jwks": ..., "tokens": [{"alg", "token"}]}.

    python3 tests/interop/pyjwt_tokens.py '{"iss": ..., "aud": ..., ...}'
"""
import json
import sys

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, RSAPSSAlgorithm

claims = json.loads(sys.argv[1])
keys, tokens = [], []


# PyJWT 2 does not know RFC 9864's fully specified name `Ed25519`; its own
# OKP implementation signs under that name once registered.
jws = jwt.PyJWS()
if "Ed25519" not in jws.get_algorithms():
    jws.register_algorithm("Ed25519", OKPAlgorithm())


def add(alg, private_key, algorithm):
    kid = "pyjwt-" + alg.lower()
    jwk = json.loads(algorithm.to_jwk(private_key.public_key()))
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    keys.append(jwk)
    payload = json.dumps(claims).encode()
    token = jws.encode(payload, private_key, algorithm=alg, headers={"kid": kid})
    tokens.append({"alg": alg, "token": token})


for alg in ["RS256", "RS384", "RS512"]:
    add(alg, rsa.generate_private_key(public_exponent=65537, key_size=2048), RSAAlgorithm)
for alg in ["PS256", "PS384", "PS512"]:
    add(alg, rsa.generate_private_key(public_exponent=65537, key_size=2048), RSAPSSAlgorithm)
add("ES256", ec.generate_private_key(ec.SECP256R1()), ECAlgorithm)
add("ES384", ec.generate_private_key(ec.SECP384R1()), ECAlgorithm)
add("ES512", ec.generate_private_key(ec.SECP521R1()), ECAlgorithm)
add("EdDSA", ed25519.Ed25519PrivateKey.generate(), OKPAlgorithm)
add("Ed25519", ed25519.Ed25519PrivateKey.generate(), OKPAlgorithm)

print(json.dumps({"jwks": {"keys": keys}, "tokens": tokens, "pyjwt": jwt.__version__}))
