#!/bin/bash
# Networks and network hot-plug through Debian's own pieces (`hestia.script=xl-net`, or run from
# dom0's shell): Linux's xen-netfront in two domUs, xen-netback in dom0, Xen's vif-bridge, vif-nat
# and vif-route scripts, unmodified xl. Every result is one `hestia-net: ` line (or a domU's
# output line, prefixed `(a) ` or `(b) `); the scenario dom0-xl-net (tests/src/lib.rs) holds
# what they must say, and the Xen rig runs the same script.
#
# The LAN: dom0's two NICs are on one QEMU hub; rcS put the first on xenbr0 (dom0's "physical"
# NIC), this script moves the second into network namespace `lan`, a host on the LAN at
# 169.254.10.2. Domain a (2 vCPUs, MAC and IP from its config) and domain b are on xenbr0; b's vif
# is then hot-plugged four times: rate-limited on the bridge, behind dom0 through vif-nat, through
# vif-route, and gone. Link-local addresses only; nothing leaves QEMU.
#
# The domUs' shells are driven through their console ptys (xenstore's console/tty), read by a
# `cat` into /tmp/con-NAME all along (a console nobody reads stalls the domU's printk), with
# `stty -echo` so that only output comes back (busybox's line editing then stays off).
#
# What the vif scripts do here, as on Xen 4.17: vif-nat translates nothing (Debian's scripts
# never touch iptables): it gives the vif a router address (the domU's + 127), a host route to
# the domU and proxy ARP; vif-route gives the vif dom0's address on gatewaydev (its `netdev`),
# a host route and proxy ARP. Either way the LAN host reaches the domU through dom0's forwarding
# and proxy ARP on xenbr0, which this script turns on as an administrator would.
#
# On the Xen rig: xen-ref --dom0 <Debian's vmlinuz> --initrd target/debian/xen/initramfs.cpio
# --dom0-cmdline "console=hvc0 earlyprintk=xen hestia.script=xl-net" --xen-cmdline
# "dom0_mem=512M,max:512M bootscrub=0 sched=credit" --qemu W, W a wrapper running QEMU with
# `-nic none` and the scenario's two virtio-net NICs on hub 0 (`-netdev hubport,hubid=0`).

# One result line, with dom0's uptime (where the run spends its time).
say() { echo "hestia-net: $* [$(cut -d' ' -f1 /proc/uptime) s]"; }
declare -A TTY
N=0

# Waits up to $2 seconds for command $1 to succeed.
wait_for() {
    local end=$((SECONDS + $2))
    until eval "$1"; do
        [ $SECONDS -lt $end ] || return 1
        sleep 0.1
    done
}

# Starts creating domU $1 with xl config overrides $2... (in the background: with dom0's memory
# fixed xl takes no lock, so two domUs are built at once).
start() {
    local name=$1
    shift
    # Quiet: a Linux boot's console lines are slow hypercalls under TCG (dmesg keeps them).
    xl create -q /etc/xen/debian-pv.cfg "name=\"$name\"" memory=128 'extra="console=hvc0 quiet"' "$@" ||
        say "$name: xl create failed" &
}

# Waits for domU $1's console (its xenstore tty node is empty until xenconsoled made the pty),
# then keeps it drained.
console() {
    local name=$1 d t
    wait_for 'd=$(xl domid $name 2>/dev/null) && t=$(xenstore-read /local/domain/$d/console/tty 2>/dev/null) && [ -n "$t" ]' 300 ||
        say "$name: no console"
    TTY[$name]=$t
    cat "$t" >"/tmp/con-$name" &
}

# Waits for domU $1's shell, then turns its echo, prompt and console log level off.
ready() {
    wait_for "grep -q 'dom0:/# ' /tmp/con-$1" 600 || { say "$1: no shell"; return 1; }
    printf 'stty -echo; PS1=; dmesg -n 1\necho @ready\n' >"${TTY[$1]}"
    wait_for "tr -d '\r' </tmp/con-$1 | grep -qx @ready" 60 || say "$1: no answer"
    # What it sends over TCP: busybox's httpd writes whole files (busybox's nc writes 1 KiB at a
    # time, and Nagle's algorithm against delayed ACKs then makes every write wait ~40 ms).
    dsh "$1" "mkdir /tmp/w && seq 50000 >/tmp/w/p && seq 100000 >/tmp/w/big && httpd -p 80 -h /tmp/w"
}

# Runs command line $2 in domU $1's shell and prints its output, each line prefixed `($1) `;
# gives up after $3 seconds (default 60).
dsh() {
    local f=/tmp/con-$1 from
    N=$((N + 1))
    from=$(($(wc -c <"$f") + 1))
    printf '%s\necho @end%s\n' "$2" "$N" >"${TTY[$1]}"
    wait_for "tail -c +$from $f | tr -d '\r' | grep -qx @end$N" "${3:-60}" ||
        say "$1: no end of: $2"
    tail -c +"$from" "$f" | tr -d '\r' | sed -n "/^@end$N\$/q; s/^/($1) /p"
}

# Prints `$1: ` and the md5 of what `wget` fetched from http://$2/$3 in dom0 (in network namespace
# $4 if given): the bytes a domU's httpd sent over TCP.
fetch() {
    say "$1: $(${4:+ip netns exec $4} wget -q -O - "http://$2/$3" | md5sum | cut -d' ' -f1)"
}
# Pings address $3 from domU $1 (or from the LAN host if $1 is lan); $2 names the case. Reached
# means any answer: the first ping may go while an ARP (proxied ones are delayed) is unanswered.
pings() {
    local c="ping -c 3 -i 0.2 -W 5 $3 | awk '/received/ {print \"$2:\", (\$4 > 0 ? \"reached\" : \"lost\"), \$0}'"
    if [ "$1" = lan ]; then say "$(ip netns exec lan sh -c "$c")"; else dsh "$1" "$c"; fi
}
# Hot-plugs a vif with xl options $3... into domU $1, waits until it is connected (state 4 in xl
# network-list) and prints its state: V is its device id (the last in the list).
attach() {
    local d=$1 what=$2 s
    shift 2
    xl network-attach "$d" "$@" || say "$d: network-attach $what failed"
    V=$(xl network-list "$d" | awk 'NR > 1 {i = $1} END {print i}')
    wait_for "s=\$(xl network-list $d | awk '\$1==$V {print \$5}'); [ \"\$s\" = 4 ]" 120
    say "$d $what vif state: $s"
}
# The single eth interface of domU $1, configured with address $2/16.
eth_up() {
    dsh "$1" "for i in \$(seq 100); do e=\$(ls /sys/class/net | grep ^eth) && break; sleep 0.1; done; \
        ip addr add $2/16 dev \$e && ip link set \$e up && echo $1-if:\$e"
}
# Removes vif $2 of domU $1 (which then has $3 eth interfaces left; $4 names the vif) and prints
# what is left of it: in xl, in dom0, in the domU.
detach() {
    local d
    d=$(xl domid "$1")
    xl network-detach "$1" "$2" || say "$1: network-detach $2 failed"
    wait_for "! [ -e /sys/class/net/vif$d.$2 ]" 30
    say "$1 detached vif $4: list $(xl network-list "$1" | awk 'END {print NR - 1}')," \
        "dom0 $(ls /sys/class/net | grep -c "^vif$d\.$2"), routes $(ip route | grep -c "vif$d\.$2")"
    dsh "$1" "for i in \$(seq 100); do [ \$(ls /sys/class/net | grep -c ^eth) = $3 ] && break; sleep 0.1; done; \
        echo $1-eths:\$(ls /sys/class/net | grep -c ^eth)"
}

# The LAN host, and forwarding with proxy ARP on dom0's LAN side for the routed and NATed domU
# (what Xen's old network-route script set up; vif-nat and vif-route set proxy ARP on the vif).
lan=$(ls /sys/class/net | grep -E '^(eth|en)' | sed -n 2p)
ip netns add lan && ip link set "$lan" netns lan &&
    ip -n lan addr add 169.254.10.2/16 dev "$lan" && ip -n lan link set "$lan" up &&
    ip -n lan link set lo up || say "no LAN host on ${lan:-a second NIC}"
echo 1 >/proc/sys/net/ipv4/ip_forward
echo 1 >/proc/sys/net/ipv4/conf/xenbr0/proxy_arp
say "payload $(seq 50000 | md5sum | cut -d' ' -f1)"

# Both domUs boot at once; a has 2 vCPUs (2 netfront queues), MAC and IP from its config.
start a 'vif=["mac=00:16:3e:00:00:0a,bridge=xenbr0,ip=169.254.1.10"]'
start b vcpus=1
console a
console b
ready a && ready b || exit 1
A=$(xl domid a)
B=$(xl domid b)

# 4, 6: a's MAC, IP and queues, as the domU and xenstore see them.
dsh a "ip addr add 169.254.1.10/16 dev eth0 && ip link set eth0 up; \
    echo a-mac:\$(cat /sys/class/net/eth0/address) a-queues:\$(ls /sys/class/net/eth0/queues)"
be=/local/domain/0/backend/vif/$A/0
say "a xenstore: mac $(xenstore-read $be/mac) ip $(xenstore-read $be/ip)" \
    "max-queues $(xenstore-read $be/multi-queue-max-queues)" \
    "queues $(xenstore-read /local/domain/$A/device/vif/0/multi-queue-num-queues)"

# 1: a reaches the LAN host through xenbr0 and dom0's NIC, and the LAN host reaches a.
pings a a-to-lan 169.254.10.2
fetch a-to-lan-tcp 169.254.1.10 p lan
pings lan lan-to-a 169.254.1.10

# 2: domU to domU on xenbr0, both ways, and TCP from b to a.
eth_up b 169.254.1.11
pings a a-to-b 169.254.1.11
pings b b-to-a 169.254.1.10
dsh a "echo b-to-a-tcp: \$(wget -q -O - http://169.254.1.11/p | md5sum | cut -d' ' -f1)"

# 5: rate=: dom0 fetches a file from b on its unlimited vif 0, then on a hot-plugged vif limited
# to 1 Mb/s (netback limits what the domU sends), timed by dom0's uptime (10 ms steps).
timed() {
    local a n
    a=$(cut -d' ' -f1 /proc/uptime)
    n=$(wget -q -O - "http://$1/big" | wc -c)
    echo "$n $a $(cut -d' ' -f1 /proc/uptime)"
}
read -r fn fa fb < <(timed 169.254.1.11)
attach b rate bridge=xenbr0 rate=1Mb/s
say "b rate key: $(xenstore-read /local/domain/0/backend/vif/$B/$V/rate)"
# 7: detaching vif 0 leaves b with the limited one.
detach b 0 1 first
eth_up b 169.254.1.12
read -r ln la lb < <(timed 169.254.1.12)
say "rate: free $fn bytes in $fa..$fb s, limited $ln bytes in $la..$lb s"
# Coarse on purpose, as a loaded host slows both: the limited transfer took over twice as long,
# and went at most 1.6 times the limit (netback lets a vif idle until then burst up to 128 KiB).
awk "BEGIN {f = $fb - $fa; l = $lb - $la; \
    print \"hestia-net: rate-limit \" ($fn == 588895 && $fn == $ln && l > 2 * f && $ln < 200000 * l ? \
        \"slower\" : \"NOT slower\")}"
detach b "$V" 0 rate

# 3: b behind dom0 through vif-nat, then vif-route: dom0 and the LAN host.
attach b nat script=vif-nat ip=169.254.2.2
say "nat vif: $(ip -4 -o addr show dev "vif$B.$V" | awk '{print $4}')" \
    "route $(ip route show 169.254.2.2 | awk '{print $1, $2, $3}')"
eth_up b 169.254.2.2
pings b nat-to-router 169.254.2.129
pings b nat-to-dom0 169.254.0.1
pings b nat-to-lan 169.254.10.2
fetch nat-to-lan-tcp 169.254.2.2 p lan
detach b "$V" 0 nat

attach b route script=vif-route ip=169.254.3.2 gatewaydev=xenbr0
say "route vif: $(ip -4 -o addr show dev "vif$B.$V" | awk '{print $4}')" \
    "route $(ip route show 169.254.3.2 | awk '{print $1, $2, $3}')"
eth_up b 169.254.3.2
pings b route-to-dom0 169.254.0.1
pings b route-to-lan 169.254.10.2
fetch route-to-lan-tcp 169.254.3.2 p lan
detach b "$V" 0 route

# 7: nothing left of b's vifs, and b still runs; a's vif detached too.
say "b after detaches: state $(xl list b | awk 'NR==2 {print $5}')," \
    "vifs in dom0 $(ls /sys/class/net | grep -c "^vif$B\.")," \
    "routes $(ip route | grep -c "vif$B\."), proxy-arp left $(ls /proc/sys/net/ipv4/conf | grep -c "^vif$B\.")"
dsh b "echo b-alive:\$((6*7))"
detach a 0 0 only

# Kernel logs: xenbus, netfront and netback complaints in dom0 and both domUs.
pat='xenbus|netfront|netback|xen_net|vif'
for d in a b; do
    dsh "$d" "dmesg | grep -iE '$pat' | grep -iE 'err|fail|warn|bug' | sed 's/^/$d-kernel: /'; \
        echo $d-kernel-complaints: \$(dmesg | grep -iE '$pat' | grep -ciE 'err|fail|warn|bug')"
done
dmesg | grep -iE "$pat" | grep -iE 'err|fail|warn|bug' | sed 's/^/hestia-net: dom0-kernel: /'
say "dom0-kernel-complaints: $(dmesg | grep -iE "$pat" | grep -ciE 'err|fail|warn|bug')"

xl destroy a
xl destroy b
wait_for '[ $(xl list | wc -l) = 2 ]' 60
say "domains: $(xl list | awk 'END {print NR - 1}')"
