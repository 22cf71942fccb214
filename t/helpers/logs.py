"""The tests' reading of the access logs they configure as
"name=value|name=value|..." lines (the meter's, the limits').

    log_records     such a log's text as a list of dicts, one a line
"""


def log_records(text):
    out = []
    for line in text.splitlines():
        rec = {}
        for part in line.split("|"):
            k, _, v = part.partition("=")
            rec[k] = v
        out.append(rec)
    return out
