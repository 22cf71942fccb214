"""JWT material for t/test_jwt.py: keys written as files for nginx, tokens
signed by an independent library (PyJWT, Debian python3-jwt), and the
hand-built malicious tokens that PyJWT refuses to make."""

import base64
import hashlib
import hmac
import json
import os

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


ISSUER = "https://issuer.example"
AUDIENCE = "api.example"
HS_SECRET = b"0123456789abcdef0123456789abcdef-toll-test"


def b64u(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_json(obj):
    return b64u(json.dumps(obj, separators=(",", ":")))


def _pub_pem(key):
    return key.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo)


class Keys:
    """One key of each algorithm (two RSA, for rotation), written under
    directory d: rsa1.pem, rsa2.pem, ec.pem, ed.pem, hs.key, jwks.json."""

    def __init__(self, d):
        self.dir = str(d)
        os.makedirs(self.dir, exist_ok=True)
        self.rsa1 = rsa.generate_private_key(public_exponent=65537,
                                             key_size=2048)
        self.rsa2 = rsa.generate_private_key(public_exponent=65537,
                                             key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.hs = HS_SECRET
        self.write("rsa1.pem", _pub_pem(self.rsa1))
        self.write("rsa2.pem", _pub_pem(self.rsa2))
        self.write("ec.pem", _pub_pem(self.ec))
        self.write("ed.pem", _pub_pem(self.ed))
        self.write("hs.key", self.hs + b"\n")
        self.write("jwks.json", json.dumps(self.jwks()).encode())

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, data):
        with open(self.path(name), "wb") as f:
            f.write(data)
        return self.path(name)

    def jwks(self):
        from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
        out = []
        for kid, k, alg in (("j-rsa", self.rsa2, RSAAlgorithm),
                            ("j-ec", self.ec, ECAlgorithm),
                            ("j-ed", self.ed, OKPAlgorithm)):
            d = json.loads(alg.to_jwk(k.public_key()))
            d["kid"] = kid
            d["use"] = "sig"
            out.append(d)
        out.append({"kty": "oct", "kid": "j-hs", "alg": "HS256",
                    "k": b64u(self.hs)})
        return {"keys": out}

    def directives(self):
        """The http-level toll_jwt_key lines for every key."""
        return "\n".join([
            "    toll_jwt_key %s kid=rsa1;" % self.path("rsa1.pem"),
            "    toll_jwt_key %s alg=RS256 kid=rsa2;" % self.path("rsa2.pem"),
            "    toll_jwt_key %s kid=ec1;" % self.path("ec.pem"),
            "    toll_jwt_key %s alg=EdDSA kid=ed1;" % self.path("ed.pem"),
            "    toll_jwt_key %s alg=HS256 kid=hs1;" % self.path("hs.key"),
        ])

    def signing(self, alg):
        return {"RS256": (self.rsa1, "rsa1"), "ES256": (self.ec, "ec1"),
                "EdDSA": (self.ed, "ed1"), "HS256": (self.hs, "hs1")}[alg]


def claims(now, sub="buyer-1", exp_in=300, **extra):
    c = {"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now,
         "exp": now + exp_in}
    c.update(extra)
    return {k: v for k, v in c.items() if v is not None}


def token(keys, alg="RS256", payload=None, kid="default", key=None,
          headers=None):
    """A correctly signed token (PyJWT).  kid="default" uses the kid the
    test config gives the signing key; None sends no kid."""
    k, default_kid = keys.signing(alg)
    if key is not None:
        k = key
    h = dict(headers or {})
    if kid == "default":
        kid = default_kid
    if kid is not None:
        h["kid"] = kid
    return pyjwt.encode(payload, k, algorithm=alg, headers=h)


def forge(header, payload, signature=b"", raw_header=None,
          raw_payload=None):
    """A token built by hand: any header, any payload, any signature."""
    hs = raw_header if raw_header is not None else b64u_json(header)
    ps = raw_payload if raw_payload is not None else b64u_json(payload)
    sig = b64u(signature) if isinstance(signature, bytes) else signature
    return "%s.%s.%s" % (hs, ps, sig)


def hs256_sign(secret, header, payload):
    """An HS256 token over any header and payload (for alg confusion:
    the secret is what the attacker believes the server uses)."""
    si = "%s.%s" % (b64u_json(header), b64u_json(payload))
    mac = hmac.new(secret, si.encode(), hashlib.sha256).digest()
    return "%s.%s" % (si, b64u(mac))
