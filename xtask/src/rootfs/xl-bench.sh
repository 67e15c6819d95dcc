#!/bin/bash
# `hestia.script=xl-bench` (cargo xtask bench): ROUNDS rounds of `xl create` of Debian's Linux
# domU (/etc/xen/debian-pv.cfg) up to its first console line, and `xl destroy` up to the domain
# gone; one line `BENCH <figure> <milliseconds>` per measurement, and the create's phases from
# `xl -vvv` (xl_phase_*). The same script runs on Hestia and on Xen 4.17, timed by dom0's own
# clock in both, so the figures compare.
. /etc/hestia/functions.sh
ROUNDS=5

# The guest's console log turning non-empty is its first console line.
guest_logs
report() { echo "BENCH $1 $((($3 - $2) / 1000))"; }

# Each line read on stdin, prefixed with the microsecond it arrived (no fork per line).
stamp() { while IFS= read -r l; do echo "${EPOCHREALTIME/./} $l"; done; }

# `phases T0 RETURNED CONSOLE < STAMPED`: where a create's time went, from the first line of
# `xl -vvv` that marks each step of libxl and libxenguest's PV builder. Up to the decompression
# and the ELF parse, all of it is dom0 user space, the same code on every hypervisor.
phases() {
    awk -v t0="$1" -v ret="$2" -v con="$3" '
        function at(name, re) { if (!(name in t) && $0 ~ re) t[name] = $1 }
        { at("kernel", "xc_dom_kernel_file:"); at("read", "xc_dom_boot_xen_init:")
          at("unpacked", "decompress OK"); at("mem", "xc_dom_mem_init:")
          at("image", "xc_dom_boot_image: called") }
        function out(name, from, to) {
            if (from != "" && to != "") printf "BENCH xl_phase_%s_ms %d\n", name, (to - from) / 1000
        }
        END {
            out("start", t0, t["kernel"]); out("read_kernel", t["kernel"], t["read"])
            out("decompress", t["read"], t["unpacked"]); out("elf_parse", t["unpacked"], t["mem"])
            out("build", t["mem"], t["image"]); out("devices_unpause", t["image"], ret)
            out("first_line", ret, con)
        }'
}

for round in $(seq "$ROUNDS"); do
    log="$GUEST_LOGS/guest-bench.log"
    rm -f "$log"
    t0=$(usecs)
    xl -vvv create -q /etc/xen/debian-pv.cfg 'name="bench"' 2>&1 | stamp > /tmp/create.log
    [ "${PIPESTATUS[0]}" = 0 ] || { echo "hestia-script: create failed"; tail -5 /tmp/create.log; break; }
    t1=$(usecs)
    wait_for "[ -s $log ]" || break
    t2=$(usecs)
    report xl_create_to_console_ms "$t0" "$t2"
    phases "$t0" "$t1" "$t2" < /tmp/create.log
    # Destroy a booted domain, as a user does: its shell's banner is on the console.
    wait_for "grep -q 'hestia-dom0: Linux' $log" || break
    t0=$(usecs)
    xl destroy bench || { echo "hestia-script: destroy failed"; break; }
    wait_for "! xl domid bench >/dev/null 2>&1" || break
    report xl_destroy_ms "$t0" "$(usecs)"
    echo "hestia-script: round $round done"
done
xl list
