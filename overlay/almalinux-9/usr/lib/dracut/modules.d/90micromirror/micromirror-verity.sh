#!/bin/sh
# Before the root is mounted: this version's slot opened as /dev/mapper/root, every block
# checked against the root hash on the UKI's command line.
type getarg >/dev/null 2>&1 || . /lib/dracut-lib.sh
slot="$(getarg micromirror.slot=)"
hash="$(getarg micromirror.roothash=)"
offset="$(getarg micromirror.hashoffset=)"
[ -n "$slot" ] || return 0
dev="/dev/disk/by-partlabel/$slot"
n=0
while [ ! -b "$dev" ] && [ "$n" -lt 60 ]; do
	sleep 1
	n=$((n + 1))
done
if ! veritysetup open --hash-offset="$offset" "$dev" root "$dev" "$hash"; then
	echo "MICROMIRROR-VERITY slot $slot does not match this version's root hash" >/dev/kmsg
	die "the root slot $slot does not match this version's root hash"
fi
echo "MICROMIRROR-VERITY opened $slot (root hash $hash)" >/dev/kmsg
