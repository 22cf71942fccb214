"""Checks for toll's problem+json answers (RFC 9457)."""

import json
import re


TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
          503: "Service Unavailable"}
REQUEST_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def check_problem(resp, status, code):
    """Asserts that resp is toll's problem answer; returns the body doc."""
    assert resp.status == status, (resp, resp.headers, resp.body)
    assert resp.header("content-type") == "application/problem+json", \
        resp.headers
    doc = json.loads(resp.body)
    assert set(doc) == {"type", "title", "status", "code", "detail",
                        "request_id"}, doc
    assert doc["type"] == "about:blank", doc
    assert doc["title"] == TITLES[status], doc
    assert doc["status"] == status and isinstance(doc["status"], int), doc
    assert doc["code"] == code, doc
    assert isinstance(doc["detail"], str) and doc["detail"], doc
    assert REQUEST_ID_RE.match(doc["request_id"]), doc
    assert resp.header_all("x-request-id") == [doc["request_id"]], \
        resp.headers
    if status == 401:
        assert resp.header_all("www-authenticate") == \
            ['Bearer realm="toll"'], resp.headers
    if status == 503:
        ra = resp.header_all("retry-after")
        assert len(ra) == 1 and ra[0].isdigit(), resp.headers
    return doc


def without_request_id(resp):
    """(body without request_id, headers without Date/X-Request-Id): what
    must be identical across every kind of 401."""
    doc = json.loads(resp.body)
    rid = doc.pop("request_id")
    body = resp.body.replace(rid.encode(), b"<rid>")
    headers = [(k.lower(), v) for k, v in resp.headers
               if k.lower() not in ("date", "x-request-id")]
    return body, tuple(headers)
