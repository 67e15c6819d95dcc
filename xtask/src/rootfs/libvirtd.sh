# Sourced by rcS in the libvirt userland (xtask/src/rootfs.rs) once Xen's daemons run: libvirtd
# daemonised, as Debian's libvirtd.service starts it, with the directories it expects. Its libxl
# driver is the only hypervisor driver; no network is defined (no dnsmasq, no iptables), so
# domains' NICs go on xenbr0 through Xen's vif-bridge script.
start_libvirtd() {
    mkdir -p /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt
    out=$(libvirtd --daemon --pid-file /run/libvirtd.pid 2>&1) ||
        { fail libvirtd "exit status $?: $out"; return 1; }
    # Up once its libxl driver answers on the socket.
    t=0
    until out=$(virsh -q -c xen:/// uri 2>&1); do
        t=$((t + 1))
        [ $t -le 300 ] || { fail libvirtd "no answer on xen:/// after 30 s: $out"; return 1; }
        sleep 0.1
    done
    started libvirtd
}
start_libvirtd
