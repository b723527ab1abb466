#!/bin/sh
# The command `jobwire work` runs in scenarios/cli-worker.json: the payload comes on stdin (the
# scenarios' JSON; matched here as text), the job's metadata in JOBWIRE_* variables; stdout is
# the result, a non-zero exit fails the attempt with stderr as the error, and exit 65 (the
# default --no-retry-exit-code) fails the job for good.
set -eu
input=$(cat)
case "$input" in
*fail-once*)
    if [ "$JOBWIRE_ATTEMPT" = 1 ]; then
        echo "failing attempt 1 of $JOBWIRE_JOB_ID on purpose" >&2
        exit 3
    fi
    ;;
*permanent*)
    echo "refusing $JOBWIRE_JOB_ID for good" >&2
    exit 65
    ;;
esac
printf '{"lang":"shell","job_id":"%s","type":"%s","attempt":%s}' "$JOBWIRE_JOB_ID" "$JOBWIRE_JOB_TYPE" "$JOBWIRE_ATTEMPT"
