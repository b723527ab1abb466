#!/bin/sh
# The command of `jobwire work` in tests/crosslang/run.sh: the payload (plain ASCII text) comes
# on stdin, the job's metadata in JOBWIRE_* variables; stdout is the result, a non-zero exit
# fails the attempt with stderr as the error, and exit 65 (the default --no-retry-exit-code)
# fails the job for good.
set -eu
input=$(cat)
case "$input" in
fail-once:*)
    if [ "$JOBWIRE_ATTEMPT" = 1 ]; then
        echo "failing attempt 1 of $JOBWIRE_JOB_ID on purpose" >&2
        exit 3
    fi
    ;;
permanent:*)
    echo "refusing $input for good" >&2
    exit 65
    ;;
esac
bytes=$(printf %s "$input" | wc -c | tr -d ' ')
upper=$(printf %s "$input" | tr '[:lower:]' '[:upper:]')
printf 'lang=shell id=%s type=%s attempt=%s bytes=%s upper=%s' \
    "$JOBWIRE_JOB_ID" "$JOBWIRE_JOB_TYPE" "$JOBWIRE_ATTEMPT" "$bytes" "$upper"
