#!/bin/bash
# libvirt on the libxl driver (`hestia.script=libvirt`, libvirt userland): virsh defines, starts,
# lists, destroys and undefines the PV domains of /etc/libvirt/*.xml. The test guest reports on
# Hestia's (or Xen's) console and powers off; Debian's Linux runs until destroyed.
. /etc/hestia/functions.sh
run 'virsh -c xen:/// list --all'
run 'virsh define /etc/libvirt/hestia-pv.xml && virsh define /etc/libvirt/debian-pv.xml'
run 'virsh start hestia-pv'
run 'for i in $(seq 100); do virsh domstate hestia-pv | grep -q "shut off" && break; sleep 0.2; done; virsh list --all'
run 'virsh start debian-pv && sleep 10 && virsh list'
run 'virsh destroy debian-pv && virsh undefine debian-pv && virsh undefine hestia-pv'
run 'virsh list --all; xl list'
