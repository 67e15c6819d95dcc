# Sourced by rcS in the libvirt userland (xtask/src/rootfs.rs) once Xen's daemons run: libvirtd
# daemonised, as Debian's libvirtd.service starts it, with the directories it expects. Its libxl
# driver is the only hypervisor driver; no network is defined (no dnsmasq, no iptables), so
# domains' NICs go on xenbr0 through Xen's vif-bridge script.
start_libvirtd() {
    mkdir -p /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt
    out=$(libvirtd --daemon --pid-file /run/libvirtd.pid 2>&1) ||
        { fail libvirtd "exit status $?: $out"; return 1; }
    # Up once its libxl driver answers on the socket. Each try is bounded: a libvirtd that
    # listens but never answers (seen on the Xen rig under TCG) would hang virsh, and the boot.
    t0=$(date +%s)
    until out=$(timeout 10 virsh -q -c xen:/// uri 2>&1); do
        [ $(($(date +%s) - t0)) -le 120 ] ||
            { fail libvirtd "no answer on xen:/// after 120 s: $out"; return 1; }
        sleep 0.2
    done
    started libvirtd
}
start_libvirtd
