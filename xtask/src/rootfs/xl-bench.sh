#!/bin/bash
# `hestia.script=xl-bench` (cargo xtask bench): ROUNDS rounds of `xl create` of Debian's Linux
# domU (/etc/xen/debian-pv.cfg) up to its first console line, and `xl destroy` up to the domain
# gone; one line `BENCH <figure> <milliseconds>` per measurement. The same script runs on Hestia
# and on Xen 4.17, timed by dom0's own clock in both, so the figures compare.
. /etc/hestia/functions.sh
ROUNDS=5

# The guest's console log turning non-empty is its first console line.
guest_logs
report() { echo "BENCH $1 $((($3 - $2) / 1000))"; }

for round in $(seq "$ROUNDS"); do
    log="$GUEST_LOGS/guest-bench.log"
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
