#!/bin/sh
# After the root is mounted at $NEWROOT, before systemd starts: a writable /var in memory over
# the image's, and the box's machine id from its state partition (none on the first boot).
type getarg >/dev/null 2>&1 || . /lib/dracut-lib.sh
work=/run/micromirror
mkdir -p "$work/var/upper" "$work/var/work" "$work/state"
mount -t overlay -o "lowerdir=$NEWROOT/var,upperdir=$work/var/upper,workdir=$work/var/work" overlay "$NEWROOT/var" ||
	echo "MICROMIRROR-ROOT cannot lay a writable /var over the image's" >/dev/kmsg
state=/dev/disk/by-partlabel/mm-state
id=""
adopted=/dev/disk/by-partlabel/mm-adopted
if [ -b "$state" ] && mount -t ext4 -o ro,noload "$state" "$work/state"; then
	id="$(cat "$work/state/identity/machine-id" 2>/dev/null)"
	umount "$work/state"
elif [ -b "$adopted" ] && mount -t xfs -o ro,norecovery "$adopted" "$work/state"; then
	# An adopted box: its state is a folder on the old root XFS, the old system's id in it.
	id="$(cat "$work/state/micromirror-state/identity/machine-id" 2>/dev/null)"
	umount "$work/state"
fi
case "$id" in
*[!0-9a-f]*) id="" ;;
esac
if [ "${#id}" -eq 32 ]; then
	printf '%s\n' "$id" >"$work/machine-id"
	mount -o bind "$work/machine-id" "$NEWROOT/etc/machine-id"
fi
