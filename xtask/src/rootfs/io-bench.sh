#!/bin/bash
# `hestia.script=io-bench` (cargo xtask bench io): disk, TCP and ping figures of Linux domUs
# next to the same workload run by dom0 itself, one line `BENCH <figure> <value>` each:
# throughputs in KiB/s, round trips in microseconds. The same script runs on Hestia, on Xen
# 4.17 and on Linux with no hypervisor at all (then only dom0's part runs: the native figures).
# dom0's part: sequential direct I/O on the data disk (`phy:`'s device) and on a loop device
# over a file in a tmpfs (what `file:` becomes), TCP (iperf3) and ping to a
# network namespace over a veth pair. The domUs' part: a client domU with that file and that
# disk as xvda and xvdb and a vif on xenbr0 runs the same disk transfers, TCP to dom0 and to a
# second domU, and ping to dom0 (/etc/hestia/io-domu.sh, the end of its boot).
. /etc/hestia/functions.sh
ROUNDS=3
MIB=64
MAGIC=hestia-bench-disk

# The data disk: the virtio disk whose first bytes are $MAGIC (cargo xtask bench made it).
disk=
for d in /dev/vd?; do
    [ "$(head -c ${#MAGIC} "$d" 2>/dev/null | tr -d "\0")" = "$MAGIC" ] && disk=$d
done
[ -n "$disk" ] || { echo "hestia-script: no data disk starting with $MAGIC"; exit 1; }

# `dd_rate NAME DD-ARGS...`: KiB/s of dd moving $MIB MiB.
dd_rate() {
    local name=$1 t0 t1
    shift
    t0=$(usecs)
    busybox dd bs=1M count=$MIB "$@" 2>/dev/null || { echo "hestia-script: dd $* failed"; return; }
    t1=$(usecs)
    echo "BENCH $name $((MIB * 1024 * 1000000 / (t1 - t0)))"
}
# `tcp_rate NAME HOST`: iperf3's receiver rate to HOST in Kbit/s.
tcp_rate() {
    iperf3 -c "$2" -t 3 -f k | awk -v n="$1" '/receiver/ {print "BENCH " n " " $(NF-2)}'
}
# `rtt NAME HOST`: ping's average round trip to HOST in microseconds.
rtt() {
    ping -c 10 -i 0.2 "$2" | awk -v n="$1" -F' = ' '/min\/avg/ {split($2, a, "/"); printf "BENCH %s %d\n", n, a[2] * 1000}'
}

echo "hestia-script: data disk $disk"
# The image's own root file system is nearly full (Linux sized it while the initramfs still
# took its memory): the files live in a tmpfs of their own.
W=/run/io
mkdir -p $W
mount -t tmpfs -o size=128m tmpfs $W
for _ in $(seq $ROUNDS); do
    dd_rate dom0_phy_write if=/dev/zero of="$disk" seek=1 oflag=direct
    dd_rate dom0_phy_read if="$disk" of=/dev/null skip=1 iflag=direct
done
busybox dd if=/dev/zero of=$W/d.img bs=1M count=$MIB 2>/dev/null
loop=$(losetup -f --show $W/d.img)
for _ in $(seq $ROUNDS); do
    dd_rate dom0_file_write if=/dev/zero of="$loop" oflag=direct
    dd_rate dom0_file_read if="$loop" of=/dev/null iflag=direct
done
losetup -d "$loop"

# The native network: a namespace behind a veth pair.
ip netns add lan
ip link add veth0 type veth peer name veth1
ip link set veth1 netns lan
ip addr add 169.254.9.1/24 dev veth0
ip link set veth0 up
ip -n lan addr add 169.254.9.2/24 dev veth1
ip -n lan link set veth1 up
ip -n lan link set lo up
ip netns exec lan iperf3 -s -D
wait_for "ping -c 1 -W 1 169.254.9.2 >/dev/null 2>&1"
for _ in $(seq $ROUNDS); do
    tcp_rate dom0_tcp_veth 169.254.9.2
done
rtt dom0_ping_veth 169.254.9.2

grep -qs control_d /proc/xen/capabilities || { echo "hestia-script: no hypervisor, no domUs"; exit 0; }

# The domUs' ramdisk: the busybox initramfs, then a second archive (Linux unpacks both) with
# iperf3, its libraries and io-domu.sh as the end of its boot (rc.local).
ov=$W/overlay
mkdir -p $ov/etc/init.d
cp /etc/hestia/io-domu.sh $ov/etc/init.d/rc.local
for f in /usr/bin/iperf3 $(/lib64/ld-linux-x86-64.so.2 --list /usr/bin/iperf3 |
    awk '$2 == "=>" {print $3} $1 ~ /^\// {print $1}'); do
    mkdir -p "$ov$(dirname "$f")"
    cp -L "$f" "$ov$f"
done
(cd $ov && busybox find . -mindepth 1 | busybox cpio -o -H newc 2>/dev/null) >$W/overlay.cpio
cat /boot/initramfs.cpio $W/overlay.cpio >$W/io-domu.cpio

guest_logs
ip addr add 169.254.1.1/16 dev xenbr0
ip link set xenbr0 up
iperf3 -s -D -B 169.254.1.1
domu() {
    xl create -q /etc/xen/debian-pv.cfg "name=\"io-$1\"" memory=128 vcpus=1 \
        "ramdisk=\"$W/io-domu.cpio\"" "extra=\"console=hvc0 hestia.io=$1\"" "${@:2}" ||
        echo "hestia-script: xl create io-$1 failed"
}
domu peer
wait_for "grep -qs io-ready $GUEST_LOGS/guest-io-peer.log"
domu client "disk=[\"file:$W/d.img,xvda,w\", \"phy:$disk,xvdb,w\"]"
# The client powers itself off when done (on_poweroff destroy).
wait_for "! xl domid io-client >/dev/null 2>&1" 600
tr -d '\r' <"$GUEST_LOGS/guest-io-client.log" | grep -E '^(BENCH|hestia-io)'
xl destroy io-peer
