#!/bin/sh
#
# embed_html.sh: turns a file (the dashboard's HTML) into a C header that
# holds it, byte for byte, as one string constant.
#
#   tools/embed_html.sh IN OUT [NAME]
#
#   tools/embed_html.sh src/dashboard/dashboard.html \
#       src/ngx_http_toll_dashboard_html.h
#
# The header defines
#
#   static u_char NAME[] = "..." "...";          one literal per line of IN
#   #define NAME_LEN (sizeof(NAME) - 1)           upper case, the bytes of IN
#
# NAME defaults to ngx_http_toll_dashboard_html. The output depends only on
# IN's bytes, IN as written on the command line (it is named in the header's
# comment: run from the top of the repository) and NAME: no dates, no
# locale, so that regenerating an unchanged page changes nothing.
#
# Inside the literals: backslash and double quote are escaped, tab and CR
# become \t and \r, other control bytes and bytes >= 0x80 become three-digit
# octal escapes (which, unlike \x, cannot swallow a following digit), and
# the second "?" of "??" becomes "\?" so that no trigraph forms. A NUL byte
# is refused: the length would disagree with strlen().
#
# POSIX sh, sed and awk only.

set -eu

LC_ALL=C
export LC_ALL

prog=tools/embed_html.sh

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
    echo "usage: $prog IN OUT [NAME]" >&2
    exit 64
fi

in=$1
out=$2
name=${3:-ngx_http_toll_dashboard_html}

case $name in
'' | [0-9]* | *[!A-Za-z0-9_]*)
    echo "$prog: \"$name\" is not a C identifier" >&2
    exit 64 ;;
esac

if [ ! -f "$in" ] || [ ! -r "$in" ]; then
    echo "$prog: cannot read \"$in\"" >&2
    exit 66
fi

if [ "$(tr -d '\000' < "$in" | wc -c)" -ne "$(wc -c < "$in")" ]; then
    echo "$prog: \"$in\" contains NUL bytes, which a C string cannot hold" >&2
    exit 65
fi

# whether the last line ends with a newline (awk cannot tell us)
last_nl=1
if [ -s "$in" ] && [ -n "$(tail -c 1 "$in" | tr -d '\n')" ]; then
    last_nl=0
fi

src=$(printf '%s\n' "$in" | sed 's#^\(\./\)*##')
upper=$(printf '%s\n' "$name" | tr 'abcdefghijklmnopqrstuvwxyz' \
                                   'ABCDEFGHIJKLMNOPQRSTUVWXYZ')
guard="_${upper}_H_INCLUDED_"

tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

awk -v src="$src" -v prog="$prog" -v name="$name" -v upper="$upper" \
    -v guard="$guard" -v last_nl="$last_nl" '
function esc(s,    o, i, n, c, p) {
    o = ""
    p = ""
    n = length(s)
    for (i = 1; i <= n; i++) {
        c = substr(s, i, 1)
        if (c == "\\") {
            o = o "\\\\"
        } else if (c == "\"") {
            o = o "\\\""
        } else if (c == "\t") {
            o = o "\\t"
        } else if (c == "\r") {
            o = o "\\r"
        } else if (c == "?" && p == "?") {
            o = o "\\?"
        } else if (code[c] < 32 || code[c] > 126) {
            o = o sprintf("\\%03o", code[c])
        } else {
            o = o c
        }
        p = c
    }
    return o
}

BEGIN {
    for (i = 1; i < 256; i++) {
        code[sprintf("%c", i)] = i
    }
    print "/*"
    print " * Generated from " src " by " prog "."
    print " * Do not edit: edit " src ", then run"
    print " *     " prog " " src " <this file>"
    print " */"
    print ""
    print "#ifndef " guard
    print "#define " guard
    print ""
    print ""
    print "static u_char " name "[] ="
    have = 0
}

{
    if (have) {
        print "    \"" esc(line) "\\n\""
    }
    line = $0
    have = 1
}

END {
    if (have) {
        print "    \"" esc(line) (last_nl ? "\\n" : "") "\";"
    } else {
        print "    \"\";"
    }
    print ""
    print "#define " upper "_LEN (sizeof(" name ") - 1)"
    print ""
    print ""
    print "#endif /* " guard " */"
}
' "$in" > "$tmp"

mv "$tmp" "$out"
trap - EXIT
