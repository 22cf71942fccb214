"""Each drop-in configuration in conf/examples/ passes `nginx -t` as it
ships (only the lines marked CHANGE rewritten, and the key files it names
present), and says which reference it is for."""

import os
import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from platform_example import EXAMPLES, render


NAMES = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".conf"))


def _pem(key):
    return key.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo)


def test_one_per_reference_platform():
    refs = set()
    for name in NAMES:
        with open(os.path.join(EXAMPLES, name)) as f:
            head = f.read(400)
        m = re.search(r"\(reference (\d{3})\)", " ".join(head.split()))
        assert m, "%s names no reference" % name
        refs.add(m.group(1))
    assert refs == {"000", "001", "002", "003", "004"}, refs


@pytest.mark.parametrize("name", NAMES)
def test_nginx_t(nginx_t, tmp_path, name):
    etc = tmp_path / "etc-toll"
    etc.mkdir()
    with open(os.path.join(EXAMPLES, name)) as f:
        files = re.findall(r"/etc/toll/([\w.-]+)", f.read())
    for fname in files:
        if fname.endswith(".pem"):
            if "stacks" in fname:
                data = _pem(ec.generate_private_key(ec.SECP256R1()))
            else:
                data = _pem(rsa.generate_private_key(public_exponent=65537,
                                                     key_size=2048))
        else:
            data = b"an-hs256-secret-of-enough-length-0123456789\n"
        (etc / fname).write_bytes(data)
    text = render(name, "127.0.0.1:6379", 8000, 18080, str(etc))
    rc, out, _ = nginx_t(text)
    assert rc == 0, out
    assert "test is successful" in out, out
