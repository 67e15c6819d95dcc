#!/bin/bash
# CPU throttling with `xl sched-credit` on running Linux domUs (`hestia.script=xl-throttle`, or
# typed at the prompt, optionally with the seconds of each measurement, 15 by default). Two
# Debian Linux domUs with one vCPU each, both allowed only CPU 1, spin (`hestia.spin` starts a
# busy loop in their busybox init); dom0's vCPUs are pinned to CPU 0, off the measured CPU.
# Their weights are set to 256/768, then swapped to 768/256; then one is destroyed and the other
# capped at 20 % of a CPU. Each change is made on the running domains and followed by a second
# of settling; then, twice, each domain's CPU time (xl list's Time column, cumulative seconds) is
# read at two instants and the differences give one line (two samples: a host that deschedules
# QEMU's CPU thread in one of them skews that one only):
#   hestia-throttle: weights W1 W2 shares S1 S2 busy B over T s
#     (each domain's % of the pair's CPU time; the pair's % of CPU 1 over T s of dom0's uptime)
#   hestia-throttle: cap C share S over T s
#     (the capped domain's % of CPU 1)
. /etc/hestia/functions.sh
secs=${1:-15}
a=spin-a
b=spin-b

spin() {
    xl create -q /etc/xen/debian-pv.cfg "name=\"$1\"" memory=128 vcpus=1 'cpus="1"' \
        'vif=[]' 'extra="console=hvc0 hestia.spin"'
}
# Waits until $1 has been found not blocked in 10 samples in a row (its busy loop runs).
spinning() {
    local n=0 s
    for _ in $(seq 900); do
        s=$(xl list "$1" 2>/dev/null | awk 'NR==2 {print $5}')
        case $s in
            '' | *b*) n=0 ;;
            *) n=$((n + 1)) ;;
        esac
        [ $n -ge 10 ] && return 0
        sleep 0.2
    done
    echo "hestia-throttle: $1 never spun"
    return 1
}
# dom0's uptime, then each named domain's CPU seconds, from one `xl list` (the uptime halfway
# through it: under TCG it takes a good part of a second).
sample() {
    local t0 t1 list
    read -r t0 _ </proc/uptime
    list=$(xl list)
    read -r t1 _ </proc/uptime
    echo "$list" | awk -v t="$t0 $t1" -v names="$*" '
        BEGIN { n = split(names, want, " "); split(t, u, " ") }
        NR > 1 { time[$1] = $6 }
        END { printf "%.2f", (u[1] + u[2]) / 2; for (i = 1; i <= n; i++) printf " %s", time[want[i]]; print "" }'
}
# The seconds of uptime and of each named domain's CPU time over $secs seconds.
measure() {
    local s0 s1
    s0=$(sample "$@")
    sleep "$secs"
    s1=$(sample "$@")
    echo "$s0 $s1" | awk '{ n = NF / 2; for (i = 1; i <= n; i++) printf "%s%.2f", (i > 1 ? " " : ""), $(n + i) - $i; print "" }'
}
weights() {
    xl sched-credit -d $a -w "$1" && xl sched-credit -d $b -w "$2" || return 1
    sleep 1
    xl sched-credit | sed -n "/^$a\|^$b/s/^/hestia-script: /p"
    for _ in 1 2; do
        measure $a $b | awk -v w="$1 $2" '{
            printf "hestia-throttle: weights %s shares %.1f %.1f busy %.1f over %.1f s\n",
                w, 100 * $2 / ($2 + $3), 100 * $3 / ($2 + $3), 100 * ($2 + $3) / $1, $1 }'
    done
}
cap() {
    xl sched-credit -d $a -c "$1" || return 1
    sleep 1
    xl sched-credit | sed -n "/^$a/s/^/hestia-script: /p"
    for _ in 1 2; do
        measure $a | awk -v c="$1" '{
            printf "hestia-throttle: cap %s share %.1f over %.1f s\n", c, 100 * $2 / $1, $1 }'
    done
}

run 'xl vcpu-pin 0 all 0'
spin $a && spin $b && spinning $a && spinning $b || exit 1
run 'xl vcpu-list'
weights 256 768
weights 768 256
run "xl destroy $b"
cap 20
run "xl destroy $a"
