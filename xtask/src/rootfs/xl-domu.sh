#!/bin/bash
# Debian's Linux as a PV domU (`hestia.script=xl-domu`): /etc/xen/debian-pv.cfg with its console
# on this one; the domU's busybox init prints its banner and powers off (hestia.bench), and xl
# returns once the domain is gone. Its NIC goes on xenbr0 through Xen's vif-bridge script.
. /etc/hestia/functions.sh
run "xl create -c /etc/xen/debian-pv.cfg 'extra=\"console=hvc0 hestia.bench\"'"
run xl list
run 'cat /var/log/xen/xl-debian-pv.log'
