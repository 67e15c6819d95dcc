# Helpers of the canned scripts (/etc/hestia/*.sh), sourced.

# Announces a command line, runs it (pipes allowed) and prints its exit status.
run() {
    echo "hestia-script: \$ $*"
    bash -c "$*"
    echo "hestia-script: exit status $?"
}

# Microseconds of the wall clock (bash's EPOCHREALTIME without its point).
usecs() { echo "${EPOCHREALTIME/./}"; }

# `wait_for TEST [SECONDS]`: polls TEST (a shell condition) every 10 ms, for at most SECONDS
# (120 without).
wait_for() {
    for _ in $(seq $((${2:-120} * 100))); do
        eval "$1" && return 0
        sleep 0.01
    done
    echo "hestia-script: timed out waiting for: $1"
    return 1
}

# Where xenconsoled writes each guest's console once `guest_logs` restarted it.
GUEST_LOGS=/var/log/xen/console

# Restarts xenconsoled writing each guest's console to $GUEST_LOGS/guest-<name>.log.
guest_logs() {
    kill "$(cat /run/xenconsoled.pid)" 2>/dev/null
    sleep 1
    mkdir -p "$GUEST_LOGS"
    "$(/usr/lib/xen-common/bin/xen-dir)/bin/xenconsoled" --pid-file /run/xenconsoled.pid \
        --log=guest --log-dir="$GUEST_LOGS" || echo "hestia-script: xenconsoled failed to start"
}
