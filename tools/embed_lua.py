#!/usr/bin/env python3
"""embed_lua.py: the Lua scripts of lua/ as C constants, with their SHA1.

    tools/embed_lua.py OUT lua/NAME.lua...

Writes OUT (lib/toll_scripts.c): for each lua/NAME.lua the entry
[TOLL_SCRIPT_NAME] of toll_scripts[] (lib/toll_scripts.h): the script's
text, its length and the SHA1 that EVALSHA names it by, computed here so
that no program hashes a script at run time.

The text sent is the file without its comment lines ("--" first on the
line), blank lines and indentation: what Redis receives is smaller, the
file keeps its comments.  The output depends only on the inputs' bytes
and names, so that regenerating unchanged scripts changes nothing.
"""

import hashlib
import os
import sys


def text_of(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("--"):
                continue
            out.append(line)
    return "\n".join(out) + "\n"


def c_literal(text):
    lines = []
    for line in text.splitlines(keepends=True):
        s = line.replace("\\", "\\\\").replace('"', '\\"')
        s = s.replace("\n", "\\n").replace("??", "?\\?")
        if any(ord(c) < 0x20 or ord(c) > 0x7e for c in s):
            sys.exit("embed_lua.py: a byte that is not printable ASCII")
        lines.append('        "%s"' % s)
    return "\n".join(lines)


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    out, paths = argv[1], sorted(argv[2:])
    body = []
    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0]
        text = text_of(path)
        sha = hashlib.sha1(text.encode("ascii")).hexdigest()
        body.append("    [TOLL_SCRIPT_%s] = {\n        \"%s\",\n%s,\n"
                    "        %d,\n        \"%s\"\n    }"
                    % (name.upper(), name, c_literal(text), len(text), sha))
    src = ("/*\n * toll: the Lua scripts of lua/, as Redis receives them.\n"
           " * Made by tools/embed_lua.py from the files of lua/: do not edit.\n"
           " */\n\n"
           "#include \"toll_scripts.h\"\n\n\n"
           "const toll_script_t  toll_scripts[TOLL_SCRIPT_N] = {\n%s\n};\n"
           % ",\n".join(body))
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write(src)
    os.replace(tmp, out)


if __name__ == "__main__":
    main(sys.argv)
