#!/bin/bash
# Canned toolstack checks for a dom0 nobody types into (`hestia.script=xl-smoke`): each
# command is announced, run, and its exit status printed.
run() {
    echo "hestia-xl-smoke: \$ $*"
    bash -c "$*"
    echo "hestia-xl-smoke: exit status $?"
}
run xl info
run xl list
run xl vcpu-list
run 'xl dmesg | tail -n 20'
run xl cpupool-list
run xl sched-credit
run xenstore-ls -f /local/domain/0
# A tiny PV guest when its kernel is in the image (it prints and shuts down).
if [ -e /etc/xen/hestia-pv.cfg ] && [ -e /boot/hestia-pv-guest ]; then
    run xl create -c /etc/xen/hestia-pv.cfg
    run xl list
fi
