//! `cargo xtask installer --site NAME [--out FILE]`: the USB installer for the boxes adopt
//! cannot convert over SSH. The stick is made from the site's built image (target/images/SITE):
//! its UKI with the installer's command line, its root image, the head of its disk image for a
//! clean flash, and the installer program (xtask/installer), as `installer::payload` lays them
//! out. Written beside the target and renamed into place, so a failed run leaves no stick image.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use gpt::partition_types::{BASIC, EFI};
use image::disk::{TablePart, MIB};
use installer::payload::{self, Blob, Payload};

use crate::paths;
use crate::site_image::{self, Built};

#[derive(clap::Args)]
pub struct InstallerArgs {
    /// Site name: profiles/SITE.toml, built into target/images/SITE (cargo xtask image)
    #[arg(long)]
    pub site: String,
    /// Where the stick's image goes (default target/installers/SITE-installer.img)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The site's built image folder (default target/images/SITE)
    #[arg(long)]
    pub built: Option<PathBuf>,
}

pub fn run(args: InstallerArgs) -> Result<()> {
    let site = paths::load(&args.site)?;
    let built = match &args.built {
        Some(dir) => site_image::built_in(dir, &args.site)?,
        None => site_image::built(&args.site)?,
    };
    let out =
        args.out.unwrap_or_else(|| paths::target().join("installers").join(format!("{}-installer.img", args.site)));
    let program =
        build::binaries::build_program("installer", payload::PROGRAM, &paths::target(), site.profile.base.distro)?;
    let profile_path = paths::profiles().join(format!("{}.toml", args.site));
    let profile = fs_err::read_to_string(&profile_path)?;
    let stick = Stick::gather(&built, &site.profile.site.name, &site.profile.site.hostname, profile, &program)?;
    if let Some(dir) = out.parent() {
        fs_err::create_dir_all(dir)?;
    }
    let partial = out.with_extension("img.partial");
    let written = stick.write(&partial, &built);
    if let Err(e) = written {
        let _ = fs_err::remove_file(&partial);
        return Err(e);
    }
    fs_err::rename(&partial, &out)?;
    println!(
        "{}: the USB installer for {} (version {}), {}.\nWrite it onto a stick (dd if={} of=/dev/sdX bs=4M \
         conv=fsync); booted from it, the box's disk is converted (keeping /data/mirror when it can, else a clean \
         flash once ERASE is typed on its console) and the box powers off.",
        out.display(),
        args.site,
        built.version,
        schema::human::human_bytes(fs_err::metadata(&out)?.len()),
        out.display()
    );
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    image::digest::sha256_hex(bytes).unwrap_or_default()
}

/// Reads `len` bytes at `offset` of the built disk image.
fn image_bytes(built: &Built, offset: u64, len: u64) -> Result<Vec<u8>> {
    let mut f = fs_err::File::open(&built.disk)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; usize::try_from(len)?];
    f.read_exact(&mut buf).with_context(|| format!("reading {} bytes at {offset} of {}", len, built.disk.display()))?;
    Ok(buf)
}

/// What goes onto the stick.
struct Stick {
    esp_files: Vec<(String, Vec<u8>)>,
    root: Vec<u8>,
    head_len: u64,
}

impl Stick {
    fn gather(built: &Built, site: &str, hostname: &str, profile: String, program: &Path) -> Result<Stick> {
        let uki = fs_err::read(&built.uki)?;
        let line = image::uki::cmdline(&uki)?;
        let installer_uki = image::uki::with_cmdline(&uki, payload::installer_cmdline(&line).as_bytes())?;
        let root = image_bytes(built, built.root_offset, built.root_image_bytes)?;
        let head_len = built.root_offset + built.root_image_bytes;
        let head_sha = image::digest::sha256_hex(fs_err::File::open(&built.disk)?.take(head_len))?;
        let backup_offset = built.disk_size - image::disk::BACKUP_GPT_BYTES;
        let backup = image_bytes(built, backup_offset, image::disk::BACKUP_GPT_BYTES)?;
        let manifest = Payload {
            site: site.to_string(),
            hostname: hostname.to_string(),
            version: built.version.clone(),
            profile,
            root_image: Blob { bytes: root.len() as u64, sha256: sha256_hex(&root) },
            disk_head: Blob { bytes: head_len, sha256: head_sha },
            backup_gpt_offset: backup_offset,
            backup_gpt: Blob { bytes: backup.len() as u64, sha256: sha256_hex(&backup) },
            image_size: built.disk_size,
            esp_needs: built.esp_needs(),
        };
        let [loader, loader_conf] = site_image::esp_files(built, ["EFI/BOOT/BOOTX64.EFI", "loader/loader.conf"])?;
        let folder = |name: &str| format!("{}/{name}", payload::FOLDER);
        let esp_files = vec![
            ("EFI/BOOT/BOOTX64.EFI".to_string(), installer_uki),
            (folder(payload::MANIFEST), manifest.to_json().into_bytes()),
            (folder(payload::PROGRAM), fs_err::read(program)?),
            (folder(payload::UKI), uki),
            (folder(payload::LOADER), loader),
            (folder(payload::LOADER_CONF), loader_conf),
            (folder(payload::BACKUP_GPT), backup),
        ];
        Ok(Stick { esp_files, root, head_len })
    }

    fn write(&self, path: &Path, built: &Built) -> Result<()> {
        let files_bytes: u64 = self.esp_files.iter().map(|(_, b)| b.len() as u64).sum();
        // FAT's own tables and slack, and at least what FAT32 needs.
        let esp_size = (files_bytes + files_bytes / 8 + 16 * MIB).div_ceil(MIB).max(64) * MIB;
        let root_size = (self.root.len() as u64).div_ceil(MIB) * MIB;
        let head_size = self.head_len.div_ceil(MIB) * MIB;
        let (esp_at, root_at) = (MIB, MIB + esp_size);
        let head_at = root_at + root_size;
        let disk_size = head_at + head_size + MIB;
        let mut file = fs_err::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
        file.set_len(disk_size)?;
        let parts = [
            TablePart { place: "esp", label: payload::ESP_LABEL, kind: EFI, offset: esp_at, size: esp_size },
            TablePart { place: "root", label: payload::ROOT_LABEL, kind: BASIC, offset: root_at, size: root_size },
            TablePart { place: "disk", label: payload::DISK_LABEL, kind: BASIC, offset: head_at, size: head_size },
        ];
        image::disk::write_table(file.file_mut(), disk_size, "micromirror-installer", &parts)?;
        let mut files: Vec<image::esp::EspFile> =
            self.esp_files.iter().map(|(p, b)| image::esp::EspFile { path: p, data: b }).collect();
        let esp = image::esp::build_esp(usize::try_from(esp_size)?, 0x4d4d_494e, &mut files)?;
        image::disk::write_sparse(file.file_mut(), esp_at, &esp)?;
        image::disk::write_sparse(file.file_mut(), root_at, &self.root)?;
        // The head, keeping the disk image's holes (most of its ESP) holes on the stick too.
        let mut src = fs_err::File::open(&built.disk)?.take(self.head_len);
        let mut chunk = Vec::with_capacity(4 * MIB as usize);
        let mut at = head_at;
        loop {
            chunk.clear();
            let n = (&mut src).take(4 * MIB).read_to_end(&mut chunk)?;
            if n == 0 {
                break;
            }
            image::disk::write_sparse(file.file_mut(), at, &chunk)?;
            at += n as u64;
        }
        file.flush()?;
        file.sync_all()?;
        Ok(())
    }
}
