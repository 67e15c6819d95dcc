#!/bin/bash
# `hestia.script=xl-bench` (cargo xtask bench): ROUNDS rounds of `xl create` of Debian's Linux
# domU (/etc/xen/debian-pv.cfg) up to its first console line, and `xl destroy` up to the domain
# gone; one line `BENCH <figure> <milliseconds>` per measurement. The same script runs on Hestia
# and on Xen 4.17, timed by dom0's own clock in both, so the figures compare.
ROUNDS=5
ROOT=$(/usr/lib/xen-common/bin/xen-dir)
LOGS=/var/log/xen/console

# xenconsoled again, now writing each guest's console to $LOGS/guest-<name>.log: the file
# turning non-empty is the guest's first console line.
kill "$(cat /run/xenconsoled.pid)" 2>/dev/null
sleep 1
mkdir -p "$LOGS"
"$ROOT/bin/xenconsoled" --pid-file /run/xenconsoled.pid --log=guest --log-dir="$LOGS" ||
    echo "hestia-script: xenconsoled failed to start"

# Microseconds of the wall clock (bash's EPOCHREALTIME without its point).
usecs() { echo "${EPOCHREALTIME/./}"; }
report() { echo "BENCH $1 $((($3 - $2) / 1000))"; }

# Polls `test` (a shell condition) every 10 ms for at most 120 s.
wait_for() {
    for _ in $(seq 12000); do
        eval "$1" && return 0
        sleep 0.01
    done
    echo "hestia-script: timed out waiting for: $1"
    return 1
}

for round in $(seq "$ROUNDS"); do
    log="$LOGS/guest-bench.log"
    rm -f "$log"
    t0=$(usecs)
    xl create -q /etc/xen/debian-pv.cfg 'name="bench"' || { echo "hestia-script: create failed"; break; }
    wait_for "[ -s $log ]" || break
    report xl_create_to_console_ms "$t0" "$(usecs)"
    # Destroy a booted domain, as a user does: its shell's banner is on the console.
    wait_for "grep -q 'hestia-dom0: Linux' $log" || break
    t0=$(usecs)
    xl destroy bench || { echo "hestia-script: destroy failed"; break; }
    wait_for "! xl domid bench >/dev/null 2>&1" || break
    report xl_destroy_ms "$t0" "$(usecs)"
    echo "hestia-script: round $round done"
done
xl list
