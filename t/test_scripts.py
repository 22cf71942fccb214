"""The Lua scripts (lua/, lib/toll_scripts.h): one file each, compiled in
by tools/embed_lua.py with the SHA1 that EVALSHA names it by.

    1. the committed lib/toll_scripts.c is what the tool makes of lua/
    2. Redis compiles every script, and names it by the SHA1 compiled in
    3. the table has one entry per file, in the order of the enum
"""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = os.path.join(ROOT, "lib", "toll_scripts.c")
HEADER = os.path.join(ROOT, "lib", "toll_scripts.h")
LUA = os.path.join(ROOT, "lua")


def lua_files():
    return sorted(os.path.join("lua", f) for f in os.listdir(LUA)
                  if f.endswith(".lua"))


def compiled():
    """name -> (text, length, sha1) as lib/toll_scripts.c holds them"""
    src = open(TABLE).read()
    out = {}
    for m in re.finditer(r'\[TOLL_SCRIPT_(\w+)\] = \{\n\s+"(\w+)",\n'
                         r'((?:\s+".*"\n?)+),\n\s+(\d+),\n\s+"([0-9a-f]{40})"',
                         src):
        enum, name, lits, length, sha = m.groups()
        assert enum == name.upper()
        text = "".join(re.findall(r'^\s+"(.*)"', lits, re.M))
        text = text.encode().decode("unicode_escape")
        out[name] = (text, int(length), sha)
    return out


def test_table_is_what_the_tool_makes(tmp_path):
    out = tmp_path / "toll_scripts.c"
    subprocess.run([sys.executable, "tools/embed_lua.py", str(out)]
                   + lua_files(), cwd=ROOT, check=True)
    assert out.read_text() == open(TABLE).read(), \
        "lib/toll_scripts.c is stale: run make lib/toll_scripts.c"


def test_redis_compiles_each_by_its_sha1(redis_server):
    scripts = compiled()
    assert sorted(scripts) == sorted(os.path.basename(f)[:-4]
                                     for f in lua_files())
    for name, (text, length, sha) in scripts.items():
        assert len(text) == length, name
        assert redis_server.client.script_load(text) == sha, name


def test_enum_follows_the_files():
    enum = re.findall(r"^\s+TOLL_SCRIPT_(\w+)(?: = 0)?,",
                      open(HEADER).read(), re.M)
    assert enum == [os.path.basename(f)[:-4].upper() for f in lua_files()]
