#!/bin/bash
# dom0's part of dom0-xl-disk-net's disk checks (tests/src/lib.rs), run from dom0's shell once
# the domU debian-pv, created with `file:/root/d.img` as xvda, a `phy:` disk as xvdb and
# `file:/root/r.img` (disk-domu.sh, padded) read-only as xvdc, has run `. /dev/xvdc`. Every
# result is one line; the scenario holds what each must say (what Xen 4.17 says on the same
# run: dom0 and the domU 2 vCPUs each).
#
# 1. What xen-blkback offered and xen-blkfront took for xvda (51712), from xenstore: flush,
#    discard, persistent grants, indirect segments, queues; the connected state.
# 2. xvdc (51744) is read-only all the way down: xenstore's mode, blkback's VDISK_READONLY
#    (4) in `info`, and a read-only loop device under it.
# 3. The discard reached the file: 4 of its 8 MiB are freed (du) and read back as zeros.
# 4. The domU crashes (`xl sysrq c`; debian-pv.cfg keeps a crashed domain, on_crash=preserve):
#    the pattern it flushed before is in the file, byte for byte, while the crashed domain
#    still holds its disks and again once `xl destroy` tore them down; no loop device is left.
# 5. No xenbus or blkback error in dom0's kernel log.
#
# On the Xen rig (xen-ref, dom0 and domU as here, `sched=credit`) the same two scripts ran with
# the domU's part as its rc.local: every line above read the same, the crashed state included.
D=$(xl domid debian-pv) || exit 1
b=/local/domain/0/backend/vbd/$D
f=/local/domain/$D/device/vbd
r() { xenstore-read "$1" 2>/dev/null || echo -; }
echo "back: flush=$(r $b/51712/feature-flush-cache) discard=$(r $b/51712/feature-discard)" \
    "persistent=$(r $b/51712/feature-persistent)" \
    "indirect=$(r $b/51712/feature-max-indirect-segments)" \
    "queues=$(r $b/51712/multi-queue-max-queues)"
echo "front-xs: queues=$(r $f/51712/multi-queue-num-queues)" \
    "persistent=$(r $f/51712/feature-persistent) state=$(r $f/51712/state)"
echo "read-only: mode=$(r $b/51744/mode) info=$(r $b/51744/info)" \
    "loop-ro=$(losetup -n -O RO -j /root/r.img | tr -d ' ')"
echo "discard-freed: $(du -k /root/d.img | cut -f1) KiB used," \
    "$(dd if=/root/d.img bs=1M skip=1 count=4 2>/dev/null | tr -d '\0' | wc -c) non-zero bytes"

# The domU's flushed pattern, as it must be in the file.
pattern() {
    a=$(yes crash-safe-pattern | head -c 1048576 | md5sum)
    b=$(dd if=/root/d.img bs=64k skip=96 count=16 2>/dev/null | md5sum)
    [ "$a" = "$b" ] && echo "pattern $1: intact" || echo "pattern $1: lost"
}
xl sysrq debian-pv c
# Shut down and crashed (`---sc-`), as Xen shows it.
state() { xl list debian-pv 2>/dev/null | awk 'NR == 2 {print $5}'; }
for _ in $(seq 120); do
    case $(state) in *c*) break ;; esac
    sleep 0.5
done
echo "crashed: $(state)"
pattern crashed
xl destroy debian-pv
for _ in $(seq 60); do xl domid debian-pv >/dev/null 2>&1 || break; sleep 0.5; done
pattern destroyed
dd if=/root/d.img bs=512 skip=1 count=1 2>/dev/null | head -c 15 | sed 's/^/back:/'
echo
xl list | awk 'END {print "domains:" NR - 1}'
losetup -a | awk 'END {print "loops:" NR}'
echo "blk-errors: $(dmesg | grep -iE 'xenbus|blkback|vbd' | grep -ciE 'error|fail|warn')"
