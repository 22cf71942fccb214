#!/usr/bin/env python3
"""Sizes of the C sources: files over a line count and functions over a
body length, for keeping rooms small (docs/architecture.md).

A function is what nginx style writes: its name at column 0 followed by
a line that is "{" alone, up to the next "}" alone at column 0.

    tools/code_sizes.py [--file-max N] [--func-max N] [DIR...]
"""

import argparse
import os
import re
import sys

NAME = re.compile(r'^([A-Za-z_][A-Za-z0-9_]*)\(')


def functions(path):
    with open(path, encoding='utf-8', errors='replace') as f:
        lines = f.read().split('\n')
    out = []
    for i, line in enumerate(lines):
        if line != '{' or i == 0:
            continue
        j = i - 1
        while j >= 0 and not NAME.match(lines[j]) and lines[j].strip():
            j -= 1
        m = NAME.match(lines[j]) if j >= 0 else None
        k = i + 1
        while k < len(lines) and lines[k] != '}':
            k += 1
        if m:
            out.append((m.group(1), i + 1, k - i + 1))
    return out, len(lines) - 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--file-max', type=int, default=1000)
    ap.add_argument('--func-max', type=int, default=100)
    ap.add_argument('dirs', nargs='*', default=['src', 'lib', 'settle', 'ctl'])
    a = ap.parse_args()
    big_files, big_funcs = [], []
    for d in a.dirs:
        for name in sorted(os.listdir(d)):
            if not name.endswith('.c'):
                continue
            path = os.path.join(d, name)
            funcs, n = functions(path)
            if n > a.file_max:
                big_files.append((n, path))
            for fn, line, length in funcs:
                if length > a.func_max:
                    big_funcs.append((length, '%s:%d %s' % (path, line, fn)))
    print('files over %d lines: %d' % (a.file_max, len(big_files)))
    for n, p in sorted(big_files, reverse=True):
        print('  %5d %s' % (n, p))
    print('functions over %d lines: %d' % (a.func_max, len(big_funcs)))
    for n, p in sorted(big_funcs, reverse=True):
        print('  %5d %s' % (n, p))
    return 0


if __name__ == '__main__':
    sys.exit(main())
