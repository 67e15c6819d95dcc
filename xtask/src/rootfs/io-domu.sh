#!/bin/sh
# The end of the boot (rc.local, run by the busybox initramfs's rcS once it loaded the modules
# and mounted /proc, /sys and /dev) of `io-bench.sh`'s domUs: the word
# `hestia.io=peer` on the kernel command line makes an iperf3 server at 169.254.1.3 that says
# `io-ready`; `hestia.io=client` (169.254.1.2) measures what dom0 measured for itself, on its
# xvda (`file:`) and xvdb (`phy:`, the first MiB left alone), then TCP to dom0 and to the peer
# and ping to dom0, prints `BENCH domu_<figure> <value>` lines on its console and powers off.
dmesg -n 1
ROUNDS=3
MIB=64

# Hundredths of a second since boot.
cs() { cut -d' ' -f1 /proc/uptime | tr -d .; }
dd_rate() {
    name=$1
    shift
    t0=$(cs)
    dd bs=1M count=$MIB "$@" 2>/dev/null || echo "hestia-io: dd $* failed"
    t1=$(cs)
    echo "BENCH $name $((MIB * 1024 * 100 / (t1 - t0 + 1)))"
}
up() {
    ip addr add "169.254.1.$1/16" dev eth0
    ip link set eth0 up
    for _ in $(seq 60); do ping -c 1 -W 1 169.254.1.1 >/dev/null 2>&1 && return; done
    echo "hestia-io: dom0 unreachable"
}

case "$(sed -n 's/.*hestia\.io=\([a-z]*\).*/\1/p' /proc/cmdline)" in
peer)
    up 3
    iperf3 -s -D && echo "io-ready"
    ;;
client)
    up 2
    for _ in $(seq $ROUNDS); do
        dd_rate domu_file_write if=/dev/zero of=/dev/xvda oflag=direct
        dd_rate domu_file_read if=/dev/xvda of=/dev/null iflag=direct
        dd_rate domu_phy_write if=/dev/zero of=/dev/xvdb seek=1 oflag=direct
        dd_rate domu_phy_read if=/dev/xvdb of=/dev/null skip=1 iflag=direct
    done
    for _ in $(seq $ROUNDS); do
        for p in dom0:1 domu:3; do
            iperf3 -c "169.254.1.${p#*:}" -t 3 -f k |
                awk -v n="domu_tcp_${p%:*}" '/receiver/ {print "BENCH " n " " $(NF-2)}'
        done
    done
    ping -c 10 -i 0.2 169.254.1.1 |
        awk -F' = ' '/min\/avg/ {split($2, a, "/"); printf "BENCH domu_ping_dom0 %d\n", a[2] * 1000}'
    poweroff -f
    ;;
esac
