#!/bin/bash
# Bad input to xl (`hestia.script=xl-badinput`, or typed at the prompt): each case is announced
# and run with xl's own output and exit status, then the host is checked for leaks: the free
# memory in KiB as xentop reads it (physinfo's free_pages, to the page) and the domains `xl
# list` shows must be what they were before the case. One line per case:
# `hestia-badinput: <case> free same|leaked N KiB, domains same|<list>`.
. /etc/hestia/functions.sh
cfg=/etc/xen/hestia-pv.cfg

free_kib() { xentop -b -i 1 | sed -n 's/.* \([0-9]*\)k free.*/\1/p'; }
domains() { xl list | awk 'NR > 1 {printf "%s/%s ", $1, $2}'; }

# Runs one case. A domain that did start (vcpus=0 is taken as 1) goes when it powers off, and
# a destroyed domain's memory may come back a little later (Xen frees it after an RCU grace
# period): both are read until they match, for at most 10 s.
case_() {
    local name=$1 f0 d0 f1 d1
    shift
    f0=$(free_kib)
    d0=$(domains)
    run "$@"
    for _ in $(seq 100); do
        f1=$(free_kib)
        d1=$(domains)
        [ "$f1" = "$f0" ] && [ "$d1" = "$d0" ] && break
        sleep 0.1
    done
    echo "hestia-badinput: $name free $([ "$f1" = "$f0" ] && echo same || echo "leaked $((f0 - f1)) KiB")," \
        "domains $([ "$d1" = "$d0" ] && echo same || echo "$d1")"
}

head -c 65536 /dev/urandom >/tmp/random.bin
free_mib=$(xl info | awk '/^free_memory/ {print $3}')

case_ missing-kernel xl create $cfg 'name=\"bad\"' 'kernel=\"/boot/missing\"'
case_ memory-above-free xl create $cfg 'name=\"bad\"' "memory=$((free_mib + 64))"
case_ vcpus-0 xl create $cfg 'name=\"bad\"' 'vcpus=0'
case_ maxvcpus-9000 xl create $cfg 'name=\"bad\"' 'maxvcpus=9000'
case_ name-of-dom0 xl create $cfg 'name=\"Domain-0\"'
# The same name as a running domain: the first one is created paused, then destroyed.
run xl create -p $cfg
case_ name-taken xl create $cfg
run xl destroy hestia-pv
case_ kernel-random-bytes xl create $cfg 'name=\"bad\"' 'kernel=\"/tmp/random.bin\"'
case_ kernel-elf-no-xen-notes xl create $cfg 'name=\"bad\"' 'kernel=\"/usr/bin/bash\"'
case_ destroy-dom0 xl destroy 0
case_ destroy-missing xl destroy 4242
run xl list
# Not bad input: a domain that powered off and is preserved stays listed with its vCPUs online
# (Xen only pauses a shut-down domain's vCPUs; they are not down).
run xl create -q $cfg "'on_poweroff=\"preserve\"'"
for _ in $(seq 100); do
    xl list hestia-pv 2>/dev/null | awk 'NR == 2 {print $5}' | grep -q s && break
    sleep 0.1
done
xl list hestia-pv | awk 'NR == 2 {print "hestia-preserved: vcpus", $4, "state", $5}'
run xl destroy hestia-pv
