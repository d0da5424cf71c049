#!/bin/sh
# Stage 2, PID 1 in the guest root: the mounts a test expects, then the command, its output
# and exit status to the run directory, and an immediate reset (qemu runs with -no-reboot, so a reset
# ends it; a panic resets too, via panic=-1).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
. /xo/env
# The overlay root is already writable tmpfs; a fresh tmpfs on /run or /tmp would hide the
# project tree when it lives there (a CI clone under /tmp).
for dir in /run /tmp; do
    case "$XO_PROJECT/" in "$dir"/*) ;; *) mount -t tmpfs tmpfs "$dir" ;; esac
done
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
# Device nodes whose open() autoloads a module (/dev/net/tun, ...), as systemd-tmpfiles does.
kmod static-nodes --format=tmpfiles 2>/dev/null | while read -r type path mode _ _ _ dev; do
    mkdir -p "${path%/*}"
    mknod -m "$mode" "$path" "${type%!}" "${dev%:*}" "${dev#*:}" 2>/dev/null
done
hostname xo-vm
ip link set lo up

cd "$XO_PROJECT" || exit 1
echo "XO-VMTEST-BEGIN $(uname -r)"
# The output file is authoritative; the console copy is for watching live and may lose its
# tail at the reset.
{ sh /xo/cmd.sh </dev/null; echo "$?" > /xo/rc; } 2>&1 | tee /xo/output
echo "XO-VMTEST-END rc=$(cat /xo/rc)"
sync
sleep 0.3
busybox reboot -f
echo b > /proc/sysrq-trigger
