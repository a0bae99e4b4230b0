#!/bin/sh
# hello-sh: a tierfaas function in POSIX shell, speaking the stdio protocol
# (docs/exec-protocol.md). stdin and stdout are one socket to the node. It says READY, then
# answers each CALL with "Hello from sh, <body>" ("world" for an empty body), in order.
#
# `read` takes a socket one byte at a time, so it never swallows the body after a header
# line. The body goes straight from input to output with `head -c N`, which in GNU coreutils
# reads exactly N bytes from a pipe or socket (a head that reads ahead would eat the next
# frame; `dd bs=1 count=N 2>/dev/null` is the portable, slower equivalent). Lengths count
# bytes, hence LC_ALL=C. End of input (the node closed the socket) exits 0; a malformed
# frame exits 1 with the reason on stderr, which reaches the node's log.
export LC_ALL=C
greeting='Hello from sh, '
nobody='world'

fail() {
    echo "hello-sh: $*" >&2
    exit 1
}

printf 'READY\n'
while IFS=' ' read -r verb id length request_id timeout_ms more; do
    # CALL <id> <length> <request-id> <timeout-ms>[ more fields, ignored]
    [ "$verb" = CALL ] || fail "expected a CALL line, got '$verb'"
    case $id in '' | 0 | 0* | *[!0-9]*) fail "bad call id '$id'" ;; esac
    case $length in '' | 0?* | *[!0-9]*) fail "bad body length '$length'" ;; esac
    [ -n "$request_id" ] && [ -n "$timeout_ms" ] || fail "a CALL line without request id or timeout"
    if [ "$length" -eq 0 ]; then
        printf 'RESULT %s 200 %d text/plain; charset=utf-8\n%s%s' \
            "$id" $((${#greeting} + ${#nobody})) "$greeting" "$nobody"
    else
        printf 'RESULT %s 200 %d text/plain; charset=utf-8\n%s' \
            "$id" $((${#greeting} + length)) "$greeting"
        head -c "$length" || fail "could not copy a $length-byte body"
    fi
done
# read fails at end of input; with a partial line it has still set the fields.
[ -z "$verb" ] || fail "end of input inside a header line"
exit 0
