#!/bin/bash
# dracut module: the read-only root. The same steps as the Debian image's initramfs-tools
# scripts (overlay/debian-12/etc/initramfs-tools/scripts): open this version's root slot as a
# dm-verity device before the root is mounted, then lay a writable /var over the image's and
# show the box's own machine id, kept on its state partition.
check() { return 0; }
depends() { return 0; }
installkernel() { instmods dm_verity erofs overlay ext4; }
install() {
	inst_multiple veritysetup cat mkdir mount umount printf
	inst_hook pre-mount 10 "$moddir/micromirror-verity.sh"
	inst_hook pre-pivot 10 "$moddir/micromirror-root.sh"
}
