# The domU's part of dom0-xl-disk-net's disk checks (tests/src/lib.rs), for the busybox
# initramfs's sh: dom0 copies it onto the domU's read-only disk xvdc, which the domU runs with
# `. /dev/xvdc` (the zeros after the text read as nothing). It prints what xen-blkfront negotiated
# as the block layer shows it, then writes to the read-only disk (refused), discards 4 MiB of the
# file: disk xvda (1 MiB on) and writes 1 MiB of a pattern 6 MiB into xvda with direct I/O and a
# flush (`conv=fsync`: blkfront's flush request, answered by blkback once the loop device's file
# is synced). Once that flush is acknowledged the data must survive the crash that follows.
q=/sys/block/xvda
echo "front: queues=$(ls $q/mq | wc -l) cache=$(tr ' ' - <$q/queue/write_cache)" \
    "discard=$(cat $q/queue/discard_max_bytes) ro-disk=$(cat /sys/block/xvdc/ro)"
echo x | dd of=/dev/xvdc 2>/dev/null
echo "ro-write status:$?"
blkdiscard -o 1048576 -l 4194304 /dev/xvda
echo "discard status:$?"
yes crash-safe-pattern | head -c 1048576 >/tmp/pattern
dd if=/tmp/pattern of=/dev/xvda bs=64k seek=96 oflag=direct conv=fsync 2>/dev/null
echo "pattern-flush status:$?"
# `xl sysrq debian-pv c` from dom0 then crashes this domU (sysrq's crash is off by default).
echo 1 >/proc/sys/kernel/sysrq
