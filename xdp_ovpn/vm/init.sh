#!/bin/sh
# Stage 1, PID 1 in the initramfs (busybox): load the virtio/9p/overlay modules, mount the
# shared guest root read-only under a tmpfs overlay, mount the run directory and the project
# tree, then hand over to the run's stage 2 script inside the new root.
export PATH=/bin
fail() { echo "xo-init: $*"; reboot -f; sleep 5; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.list); do
    insmod "/modules/$m" 2>/dev/null || echo "xo-init: insmod $m failed"
done

o9p="trans=virtio,version=9p2000.L,msize=512000"
mkdir -p /lower /rw /newroot
mount -t 9p -o "$o9p,ro,cache=loose" xoroot /lower || fail "cannot mount the guest root (9p)"
mount -t tmpfs -o mode=0755 tmpfs /rw && mkdir /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot \
    || fail "cannot mount the overlay root"
mkdir -p /newroot/xo
mount -t 9p -o "$o9p,cache=none" xorun /newroot/xo || fail "cannot mount the run directory"
project=$(cat /newroot/xo/project)
mkdir -p "/newroot$project"
mount -t 9p -o "$o9p,ro,cache=loose" xoproject "/newroot$project" \
    || fail "cannot mount the project tree"

umount /proc /sys
umount /dev 2>/dev/null
exec switch_root /newroot /bin/sh /xo/stage2.sh
