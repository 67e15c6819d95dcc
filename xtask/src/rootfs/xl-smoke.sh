#!/bin/bash
# Canned toolstack checks for a dom0 nobody types into (`hestia.script=xl-smoke`): each
# command is announced, run, and its exit status printed.
. /etc/hestia/functions.sh
run xl info
run xl list
run xl vcpu-list
run 'xl dmesg | tail -n 20'
run xl cpupool-list
run xl sched-credit
run xenstore-ls -f /local/domain/0
# A tiny PV guest when its kernel is in the image (a test guest that prints and shuts down; on
# Xen a domU's console_io writes are refused, so its lines show only on Hestia): created, then
# watched until it is gone (on_poweroff = "destroy").
if [ -e /boot/hestia-pv-guest ]; then
    run xl -v create /etc/xen/hestia-pv.cfg
    run xl list
    for _ in $(seq 100); do
        xl domid hestia-pv >/dev/null 2>&1 || break
        sleep 0.2
    done
    run xl list
    run 'xl dmesg | tail -n 20'
fi
