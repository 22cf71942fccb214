"""Every line the conformance suite cites says what the test quotes.

The references live beside the project (../shared/reference/), not in it:
where they are absent (a clean clone on CI) this check is skipped and the
quotes in the tests stand for the lines.
"""

import importlib
import os

import pytest

from platform_example import reference_file


HERE = os.path.dirname(os.path.abspath(__file__))


def _citations():
    out = []
    for f in sorted(os.listdir(HERE)):
        if not (f.startswith("test_") and f.endswith(".py")) \
                or f == "test_citations.py":
            continue
        mod = importlib.import_module(f[:-3])
        for name in dir(mod):
            fn = getattr(mod, name)
            for c in getattr(fn, "cites", ()):
                out.append(("%s::%s" % (f, name),) + c)
    return out


CITATIONS = _citations()


def test_every_platform_is_cited():
    refs = {c[1] for c in CITATIONS}
    assert refs == {"000", "001", "002", "003", "004"}, refs


@pytest.mark.parametrize("where,ref,line,quote", CITATIONS,
                         ids=["%s:%s:%d" % (c[0], c[1], c[2])
                              for c in CITATIONS])
def test_citation(where, ref, line, quote):
    path = reference_file(ref)
    if path is None:
        pytest.skip("the references are not beside the project")
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    assert 1 <= line <= len(lines), (where, line)
    text = " ".join(lines[line - 1].split())
    want = " ".join(quote.split())
    assert want in text, "%s cites %s line %d: %r is not in %r" % (
        where, ref, line, want, lines[line - 1])
