//! Unified Kernel Image: systemd's EFI stub with the kernel, initramfs, command line and
//! os-release appended as PE sections. Written by hand because bookworm has no `ukify` and
//! objcopy's output depends on the host's binutils; this is ~100 lines of PE32+ header editing.

use crate::ImageError;

/// The parts of a UKI, in the order they are appended (the kernel last, as ukify does).
pub struct UkiParts<'a> {
    pub os_release: &'a [u8],
    pub cmdline: &'a [u8],
    pub initrd: &'a [u8],
    pub linux: &'a [u8],
}

const SECTION_HEADER: usize = 40;
const SCN_INITIALIZED_DATA_READ: u32 = 0x0000_0040 | 0x4000_0000;

/// Returns the stub with the parts appended as `.osrel`, `.cmdline`, `.initrd`, `.linux`.
pub fn build_uki(stub: &[u8], parts: &UkiParts<'_>) -> Result<Vec<u8>, ImageError> {
    let mut pe = Pe::parse(stub.to_vec())?;
    for (name, data) in
        [(".osrel", parts.os_release), (".cmdline", parts.cmdline), (".initrd", parts.initrd), (".linux", parts.linux)]
    {
        if pe.has_section(name) {
            return Err(ImageError::Uki(format!("the stub already has a {name} section; is it a UKI already?")));
        }
        pe.append_section(name, data)?;
    }
    Ok(pe.bytes)
}

/// The same UKI with another command line: our four sections are taken off again (the stub
/// comes back byte for byte, but for the zero padding `build_uki` adds) and appended anew. The
/// USB installer boots the site's UKI this way, its root named otherwise.
pub fn with_cmdline(uki: &[u8], cmdline: &[u8]) -> Result<Vec<u8>, ImageError> {
    let pe = Pe::parse(uki.to_vec())?;
    let count = pe.section_count();
    let ours = [".osrel", ".cmdline", ".initrd", ".linux"];
    if count < ours.len() {
        return Err(ImageError::Uki("not a UKI: too few sections".into()));
    }
    let tail: Vec<Section> = (count - ours.len()..count).map(|i| pe.section(i)).collect();
    if tail.iter().map(|s| s.name.as_str()).ne(ours) {
        return Err(ImageError::Uki(format!("not a UKI built here: its last sections are not {}", ours.join(", "))));
    }
    let content = |s: &Section| -> Result<Vec<u8>, ImageError> {
        let (at, len) = (s.raw_pointer as usize, s.virtual_size as usize);
        uki.get(at..at + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| ImageError::Uki(format!("{} runs past the end", s.name)))
    };
    let (os_release, initrd, linux) = (content(&tail[0])?, content(&tail[2])?, content(&tail[3])?);
    let mut stub = pe.bytes.clone();
    stub.truncate(tail[0].raw_pointer as usize);
    let table = pe.table + (count - ours.len()) * SECTION_HEADER;
    stub[table..table + ours.len() * SECTION_HEADER].fill(0);
    let kept = u16::try_from(count - ours.len()).map_err(|_| ImageError::Uki("too many sections".into()))?;
    stub[pe.coff + 2..pe.coff + 4].copy_from_slice(&kept.to_le_bytes());
    let appended: u32 = tail.iter().map(|s| s.raw_size).sum();
    let init_data = u32_at(&stub, pe.opt + 8).saturating_sub(appended);
    stub[pe.opt + 8..pe.opt + 12].copy_from_slice(&init_data.to_le_bytes());
    build_uki(&stub, &UkiParts { os_release: &os_release, cmdline, initrd: &initrd, linux: &linux })
}

/// The command line a UKI carries.
pub fn cmdline(uki: &[u8]) -> Result<String, ImageError> {
    let pe = Pe::parse(uki.to_vec())?;
    let s = (0..pe.section_count())
        .map(|i| pe.section(i))
        .find(|s| s.name == ".cmdline")
        .ok_or_else(|| ImageError::Uki("no .cmdline section".into()))?;
    let bytes = uki
        .get(s.raw_pointer as usize..(s.raw_pointer + s.virtual_size) as usize)
        .ok_or_else(|| ImageError::Uki(".cmdline runs past the end".into()))?;
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// Lists (name, virtual address, size) of every section (our reader; the tests also use another).
#[cfg(test)]
fn sections(image: &[u8]) -> Result<Vec<(String, u32, u32)>, ImageError> {
    let pe = Pe::parse(image.to_vec())?;
    Ok((0..pe.section_count()).map(|i| pe.section(i)).map(|s| (s.name, s.virtual_address, s.virtual_size)).collect())
}

struct Pe {
    bytes: Vec<u8>,
    coff: usize,
    opt: usize,
    table: usize,
}

struct Section {
    name: String,
    virtual_size: u32,
    virtual_address: u32,
    raw_size: u32,
    raw_pointer: u32,
}

impl Pe {
    fn parse(bytes: Vec<u8>) -> Result<Pe, ImageError> {
        let bad = |m: &str| ImageError::Uki(format!("EFI stub is not a PE32+ image: {m}"));
        if bytes.len() < 0x40 || &bytes[..2] != b"MZ" {
            return Err(bad("no MZ header"));
        }
        let pe_off = u32_at(&bytes, 0x3C) as usize;
        if bytes.len() < pe_off + 24 || &bytes[pe_off..pe_off + 4] != b"PE\0\0" {
            return Err(bad("no PE signature"));
        }
        let coff = pe_off + 4;
        let opt = coff + 20;
        if u16_at(&bytes, opt) != 0x20B {
            return Err(bad("optional header is not PE32+"));
        }
        let table = opt + usize::from(u16_at(&bytes, coff + 16));
        let pe = Pe { bytes, coff, opt, table };
        if pe.bytes.len() < pe.table + pe.section_count() * SECTION_HEADER {
            return Err(bad("section table runs past the end"));
        }
        Ok(pe)
    }

    fn section_count(&self) -> usize {
        usize::from(u16_at(&self.bytes, self.coff + 2))
    }

    fn section(&self, i: usize) -> Section {
        let o = self.table + i * SECTION_HEADER;
        let raw_name = &self.bytes[o..o + 8];
        let name = String::from_utf8_lossy(raw_name).trim_end_matches('\0').to_string();
        Section {
            name,
            virtual_size: u32_at(&self.bytes, o + 8),
            virtual_address: u32_at(&self.bytes, o + 12),
            raw_size: u32_at(&self.bytes, o + 16),
            raw_pointer: u32_at(&self.bytes, o + 20),
        }
    }

    fn has_section(&self, name: &str) -> bool {
        (0..self.section_count()).any(|i| self.section(i).name == name)
    }

    fn append_section(&mut self, name: &str, data: &[u8]) -> Result<(), ImageError> {
        let section_align = u32_at(&self.bytes, self.opt + 32);
        let file_align = u32_at(&self.bytes, self.opt + 36);
        let headers_size = u32_at(&self.bytes, self.opt + 60) as usize;
        let count = self.section_count();
        let sections: Vec<Section> = (0..count).map(|i| self.section(i)).collect();
        let first_raw =
            sections.iter().filter(|s| s.raw_size > 0).map(|s| s.raw_pointer as usize).min().unwrap_or(headers_size);
        let header_at = self.table + count * SECTION_HEADER;
        if header_at + SECTION_HEADER > headers_size.min(first_raw) {
            return Err(ImageError::Uki(format!("no room for a {name} section header in the stub's headers")));
        }
        let end_va = sections.iter().map(|s| s.virtual_address + s.virtual_size.max(s.raw_size)).max().unwrap_or(0);
        let va = align(end_va, section_align);
        let len = u32::try_from(data.len()).map_err(|_| ImageError::Uki(format!("{name} is larger than 4 GiB")))?;
        let raw_pointer =
            align(u32::try_from(self.bytes.len()).map_err(|_| ImageError::Uki("image too large".into()))?, file_align);
        let raw_size = align(len, file_align);

        self.bytes.resize(raw_pointer as usize, 0);
        self.bytes.extend_from_slice(data);
        self.bytes.resize((raw_pointer + raw_size) as usize, 0);

        let mut header = [0u8; SECTION_HEADER];
        header[..name.len().min(8)].copy_from_slice(&name.as_bytes()[..name.len().min(8)]);
        header[8..12].copy_from_slice(&len.to_le_bytes());
        header[12..16].copy_from_slice(&va.to_le_bytes());
        header[16..20].copy_from_slice(&raw_size.to_le_bytes());
        header[20..24].copy_from_slice(&raw_pointer.to_le_bytes());
        header[36..40].copy_from_slice(&SCN_INITIALIZED_DATA_READ.to_le_bytes());
        self.bytes[header_at..header_at + SECTION_HEADER].copy_from_slice(&header);

        let new_count = u16::try_from(count + 1).map_err(|_| ImageError::Uki("too many sections".into()))?;
        self.bytes[self.coff + 2..self.coff + 4].copy_from_slice(&new_count.to_le_bytes());
        let size_of_image = align(va + len, section_align);
        self.bytes[self.opt + 56..self.opt + 60].copy_from_slice(&size_of_image.to_le_bytes());
        let init_data = u32_at(&self.bytes, self.opt + 8).saturating_add(raw_size);
        self.bytes[self.opt + 8..self.opt + 12].copy_from_slice(&init_data.to_le_bytes());
        // The firmware does not verify the optional header checksum; zero says "not computed".
        self.bytes[self.opt + 64..self.opt + 68].copy_from_slice(&0u32.to_le_bytes());
        Ok(())
    }
}

fn align(v: u32, to: u32) -> u32 {
    if to <= 1 {
        v
    } else {
        v.div_ceil(to) * to
    }
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE32+ image with one .text section, enough to exercise the appender.
    fn tiny_stub() -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[0..2].copy_from_slice(b"MZ");
        b[0x3C..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        b[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
        b[coff + 2..coff + 4].copy_from_slice(&1u16.to_le_bytes());
        b[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
        let opt = coff + 20;
        b[opt..opt + 2].copy_from_slice(&0x20Bu16.to_le_bytes());
        b[opt + 32..opt + 36].copy_from_slice(&0x1000u32.to_le_bytes());
        b[opt + 36..opt + 40].copy_from_slice(&0x200u32.to_le_bytes());
        b[opt + 56..opt + 60].copy_from_slice(&0x2000u32.to_le_bytes());
        b[opt + 60..opt + 64].copy_from_slice(&0x400u32.to_le_bytes());
        let table = opt + 240;
        b[table..table + 5].copy_from_slice(b".text");
        b[table + 8..table + 12].copy_from_slice(&0x100u32.to_le_bytes());
        b[table + 12..table + 16].copy_from_slice(&0x1000u32.to_le_bytes());
        b[table + 16..table + 20].copy_from_slice(&0x200u32.to_le_bytes());
        b[table + 20..table + 24].copy_from_slice(&0x400u32.to_le_bytes());
        b.resize(0x600, 0x90);
        b
    }

    #[test]
    fn sections_are_appended_aligned_and_readable() {
        let parts = UkiParts {
            os_release: b"ID=debian\n",
            cmdline: b"root=PARTLABEL=root\n",
            initrd: &[1; 5000],
            linux: &[2; 9000],
        };
        let uki = build_uki(&tiny_stub(), &parts).unwrap();
        let s = sections(&uki).unwrap();
        let names: Vec<&str> = s.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, vec![".text", ".osrel", ".cmdline", ".initrd", ".linux"]);
        for w in s.windows(2) {
            assert!(w[1].1 >= w[0].1 + w[0].2, "sections overlap: {s:?}");
            assert_eq!(w[1].1 % 0x1000, 0);
        }
        let pe = Pe::parse(uki.clone()).unwrap();
        let linux = pe.section(4);
        assert_eq!(&uki[linux.raw_pointer as usize..][..9000], &[2u8; 9000][..]);
        assert_eq!(u32_at(&uki, pe.opt + 56), align(linux.virtual_address + 9000, 0x1000));
    }

    /// Reads a UKI with the `object` crate, not our own parser: (section name, contents).
    fn read_with_object(uki: &[u8]) -> Vec<(String, Vec<u8>)> {
        use object::{Object, ObjectSection};
        let file = object::read::pe::PeFile64::parse(uki).expect("the object crate reads our UKI as PE32+");
        file.sections()
            .map(|s| {
                let name = s.name().expect("a section name").to_string();
                // The raw data is padded to the file alignment; the virtual size is the payload.
                let data = s.data().expect("section data");
                let size = (s.size() as usize).min(data.len());
                (name, data[..size].to_vec())
            })
            .collect()
    }

    #[test]
    fn a_pe_reader_of_its_own_finds_every_part_byte_for_byte_on_systemds_stub() {
        let stub_path = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
        let stub = std::fs::read(stub_path).unwrap_or_else(|e| {
            panic!("{stub_path}: {e} (Debian package systemd-boot-efi; `cargo xtask test` installs it)")
        });
        let initrd: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let linux: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        let parts = UkiParts {
            os_release: b"ID=micromirror\nIMAGE_VERSION=1\n",
            cmdline: b"root=PARTUUID=x rw",
            initrd: &initrd,
            linux: &linux,
        };
        let uki = build_uki(&stub, &parts).unwrap();
        let read = read_with_object(&uki);
        let stub_sections = read_with_object(&stub).len();
        assert_eq!(read.len(), stub_sections + 4, "the stub's sections and ours");
        let got = |name: &str| {
            read.iter().find(|(n, _)| n == name).map(|(_, d)| d.clone()).unwrap_or_else(|| panic!("no {name}"))
        };
        assert_eq!(got(".osrel"), parts.os_release);
        assert_eq!(got(".cmdline"), parts.cmdline);
        assert_eq!(got(".initrd"), initrd);
        assert_eq!(got(".linux"), linux);
        // objdump (binutils) agrees on the section table too.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("uki.efi");
        std::fs::write(&file, &uki).unwrap();
        let out = std::process::Command::new("objdump").arg("-h").arg(&file).output().expect("objdump (binutils)");
        let table = String::from_utf8_lossy(&out.stdout);
        for name in [".osrel", ".cmdline", ".initrd", ".linux"] {
            assert!(table.contains(name), "objdump -h does not list {name}:\n{table}");
        }
    }

    #[test]
    fn another_command_line_gives_the_uki_built_with_it_on_systemds_stub_and_ours() {
        let stub_path = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
        let systemd = std::fs::read(stub_path).unwrap_or_else(|e| panic!("{stub_path}: {e}"));
        for stub in [tiny_stub(), systemd] {
            let parts = |cmdline: &'static [u8]| UkiParts {
                os_release: b"ID=micromirror\n",
                cmdline,
                initrd: &[3; 7000],
                linux: &[4; 11000],
            };
            let before = build_uki(&stub, &parts(b"micromirror.slot=micromirror_1 ro")).unwrap();
            let after = with_cmdline(&before, b"micromirror.slot=mminstall-root micromirror.installer ro").unwrap();
            let direct = build_uki(&stub, &parts(b"micromirror.slot=mminstall-root micromirror.installer ro")).unwrap();
            assert!(after == direct, "the rebuilt UKI differs from one built with the new line");
            assert_eq!(cmdline(&after).unwrap(), "micromirror.slot=mminstall-root micromirror.installer ro");
        }
        assert!(with_cmdline(&tiny_stub(), b"x").is_err(), "a bare stub is not a UKI");
    }

    #[test]
    fn a_uki_is_not_wrapped_twice_and_junk_is_refused() {
        let parts = UkiParts { os_release: b"x", cmdline: b"x", initrd: b"x", linux: b"x" };
        let uki = build_uki(&tiny_stub(), &parts).unwrap();
        assert!(build_uki(&uki, &parts).is_err());
        assert!(build_uki(b"not a PE file at all, just text padding padding padding padding", &parts).is_err());
    }
}
