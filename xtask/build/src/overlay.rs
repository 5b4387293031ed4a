//! Stage 3: lay `overlay/common` and `overlay/<distro>` over the base tree, rendering `*.j2`
//! templates from the profile (undefined values are errors), install our binaries and the site
//! configuration, enable units, and strip the machine identity so it is made on first boot.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use minijinja::{Environment, UndefinedBehavior};
use schema::profile::{Distro, LoadedProfile};

use crate::binaries::Binaries;
use crate::cmd::{self, cmd};
use crate::load::Peers;
use crate::progress;
use crate::tree;

/// Units we enable in every image (the updater only where the site has `[update]`), and the
/// distro's own additions.
pub fn units_to_enable(distro: Distro, updates: bool) -> Vec<&'static str> {
    let mut v = vec![
        "mirror-server.service",
        "mirror-sync.service",
        "micromirror-host-keys.service",
        "micromirror-boot-report.service",
        "micromirror-health.service",
        "micromirror-state.service",
        "srv-mirror.mount",
        "var-lib-micromirror.mount",
        "var-log-journal.mount",
        "efi.mount",
        "tmp.mount",
    ];
    if updates {
        v.push("mirror-update.service");
    }
    match distro {
        Distro::Debian12 => v.extend([
            "systemd-networkd.service",
            "systemd-timesyncd.service",
            "ssh.service",
            "nftables.service",
            "rsync.service",
        ]),
        Distro::Almalinux9 => v.extend([
            "NetworkManager.service",
            "chronyd.service",
            "sshd.service",
            "nftables.service",
            "rsyncd.service",
        ]),
    }
    v
}

/// Units that must not run on an appliance nobody answers prompts on, whose root nothing
/// changes, or that only cost a boot its time: under TCG each unit's process is a tenth of a
/// second or more, and the first boot's critical chain shares two CPUs with all of them.
pub fn units_to_mask(distro: Distro) -> Vec<&'static str> {
    let mut v = vec![
        "systemd-firstboot.service",
        // Kernel interfaces nothing on the box uses (debugging, tracing, huge pages, FUSE,
        // configfs, foreign binary formats); each is a mount(8) or modprobe at boot.
        "sys-kernel-debug.mount",
        "sys-kernel-tracing.mount",
        "dev-hugepages.mount",
        "sys-fs-fuse-connections.mount",
        "sys-kernel-config.mount",
        "proc-sys-fs-binfmt_misc.automount",
        "systemd-binfmt.service",
        "modprobe@drm.service",
        "modprobe@fuse.service",
        "modprobe@configfs.service",
    ];
    if distro == Distro::Debian12 {
        // Debian's sshd-keygen equivalent is in the package's postinst; ours runs at first boot.
        v.push("e2scrub_reap.service");
        // It would replace the loader on the ESP behind the updater's back.
        v.push("systemd-boot-update.service");
        // The root is a read-only image: packages change only by a new image, so apt's and
        // dpkg's timers have nothing to do; there is no LVM for e2scrub.
        v.extend(["apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer"]);
    }
    v
}

/// systemd's generators that have nothing to find here: the partitions are mounted by our own
/// units and the initramfs opens the verity root (gpt-auto, veritysetup, cryptsetup,
/// integritysetup, hibernate-resume), and the image has no SysV scripts without a unit, no
/// rc.local and no offline updates. Masked by a link to /dev/null in /etc/systemd/system-generators.
pub const GENERATORS_TO_MASK: &[&str] = &[
    "systemd-gpt-auto-generator",
    "systemd-veritysetup-generator",
    "systemd-cryptsetup-generator",
    "systemd-integritysetup-generator",
    "systemd-hibernate-resume-generator",
    "systemd-sysv-generator",
    "systemd-rc-local-generator",
    "systemd-system-update-generator",
];

/// Files that would make every box written from one image the same machine.
pub const MACHINE_IDENTITY: &[&str] = &[
    "etc/ssh/ssh_host_rsa_key",
    "etc/ssh/ssh_host_rsa_key.pub",
    "etc/ssh/ssh_host_ecdsa_key",
    "etc/ssh/ssh_host_ecdsa_key.pub",
    "etc/ssh/ssh_host_ed25519_key",
    "etc/ssh/ssh_host_ed25519_key.pub",
    "var/lib/systemd/random-seed",
    "var/lib/dbus/machine-id",
];

/// Lays the overlay over the tree at `root`, with the site's configuration, the catalog entries
/// of its projects (from `catalog`) and our programs.
pub fn apply(site: &LoadedProfile, catalog: &Path, root: &Path, bins: &Binaries, peers: &Peers) -> Result<()> {
    let stage = progress::stage("overlay", "rendering the site's files");
    let distro = site.profile.base.distro;
    let env = environment();
    let ctx = context(site);
    let mut count = 0;
    for layer in ["common", distro.as_str()] {
        let dir = overlay_dir().join(layer);
        if dir.is_dir() {
            count += lay(&dir, root, &env, &ctx)?;
        }
    }
    install_site_config(site, catalog, root, peers)?;
    for (name, path) in &bins.files {
        let data = fs_err::read(path).with_context(|| format!("reading {}", path.display()))?;
        tree::write_file(&root.join("usr/bin").join(name), &data, 0o755)?;
    }
    set_timezone(site, root)?;
    make_users(site, root)?;
    forget_machine_identity(root)?;
    let enable = units_to_enable(distro, site.profile.update.is_some());
    systemctl(root, "enable", &enable)?;
    systemctl(root, "mask", &units_to_mask(distro))?;
    systemctl(root, "set-default", &["multi-user.target"])?;
    mask_generators(root)?;
    stage.done(&format!("{count} overlay files, {} units enabled", enable.len()));
    Ok(())
}

/// The workspace's overlay folder: `common/` and one folder per distro.
pub fn overlay_dir() -> PathBuf {
    crate::workspace().join("overlay")
}

pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env
}

/// What templates see: the whole profile, its projects' catalog entries, the distro, `net`: the
/// profile's prefix lists split by address family (nftables wants them apart), `image`: facts
/// of the disk layout (the ESP's partition UUID), and the rsync daemon's connections for the
/// box's link (`schema::topology::rsync_connections`: its clients and the boxes it feeds).
pub fn context(site: &LoadedProfile) -> minijinja::Value {
    let split =
        |list: &[String]| -> (Vec<String>, Vec<String>) { list.iter().cloned().partition(|p| !p.contains(':')) };
    let (admin_v4, admin_v6) = split(&site.profile.access.admin_prefixes);
    let (block_v4, block_v6) = split(&site.profile.server.blocklist);
    let esp_partuuid = image::disk::seeded_uuid(&site.profile.site.name, "esp").to_string();
    minijinja::context! {
        profile => minijinja::Value::from_serialize(&site.profile),
        projects => minijinja::Value::from_serialize(&site.projects),
        distro => site.profile.base.distro.as_str(),
        location => site.profile.site.location.to_string(),
        drivers => super::boot::initrd_drivers(site),
        watchdogs => super::boot::WATCHDOGS,
        root_openers => super::boot::ROOT_OPENERS,
        hardware_title => site.profile.site.hardware_class().map_or("no class: every class's drivers", |c| c.title.as_str()),
        rsync_max_connections => schema::topology::rsync_connections(site.profile.site.link_mbit()),
        net => minijinja::context! { admin_v4, admin_v6, block_v4, block_v6 },
        image => minijinja::context! { esp_partuuid },
    }
}

/// Every template of one overlay layer rendered for a site, as `apply` renders it, as
/// (path inside the tree, text): for `cargo xtask render` and the tests.
pub fn render_templates(site: &LoadedProfile, layer: &str) -> Result<Vec<(String, String)>> {
    let env = environment();
    let ctx = context(site);
    let dir = overlay_dir().join(layer);
    let mut out = Vec::new();
    for p in tree::walk(&dir)?.into_iter().filter(|p| p.extension().is_some_and(|e| e == "j2")) {
        let rel = p.strip_prefix(&dir)?.to_string_lossy().trim_end_matches(".j2").to_string();
        let text = render(&env, &p.display().to_string(), &fs_err::read_to_string(&p)?, &ctx)?;
        out.push((rel, text));
    }
    Ok(out)
}

/// Writes the site's rendered configuration files (every `*.j2` of overlay/common and
/// overlay/<distro>) under `out` as they land in the image; templates that render empty are files
/// the image does not get (e.g. bond members). Returns how many were written.
pub fn render_site(site: &LoadedProfile, out: &Path) -> Result<usize> {
    let mut count = 0;
    for layer in ["common", site.profile.base.distro.as_str()] {
        for (rel, text) in render_templates(site, layer)? {
            if text.trim().is_empty() {
                continue;
            }
            let dest = out.join(&rel);
            if let Some(parent) = dest.parent() {
                fs_err::create_dir_all(parent)?;
            }
            fs_err::write(&dest, text)?;
            count += 1;
        }
    }
    Ok(count)
}

pub fn render(env: &Environment, name: &str, text: &str, ctx: &minijinja::Value) -> Result<String> {
    env.render_str(text, ctx.clone()).map_err(|e| {
        let line = e.line().map(|l| format!(":{l}")).unwrap_or_default();
        anyhow::anyhow!("{name}{line}: {e}\n  fix: the template may use only keys the profile has (see the README's profile reference)")
    })
}

/// Copies (or renders) every file of one overlay layer into `root`; returns the file count.
fn lay(layer: &Path, root: &Path, env: &Environment, ctx: &minijinja::Value) -> Result<usize> {
    use std::os::unix::fs::PermissionsExt;
    let mut count = 0;
    for src in tree::walk(layer)? {
        let rel = src.strip_prefix(layer).context("overlay path outside its layer")?;
        let meta = fs_err::symlink_metadata(&src)?;
        if meta.is_dir() {
            continue;
        }
        let mode = mode_for(rel, meta.permissions().mode());
        let is_template = rel.to_str().is_some_and(|s| s.ends_with(".j2"));
        let (dest, data): (PathBuf, Vec<u8>) = match rel.to_str().and_then(|s| s.strip_suffix(".j2")) {
            Some(stripped) => {
                let text = fs_err::read_to_string(&src).with_context(|| format!("reading {}", src.display()))?;
                (root.join(stripped), render(env, &src.display().to_string(), &text, ctx)?.into_bytes())
            }
            None => (root.join(rel), fs_err::read(&src).with_context(|| format!("reading {}", src.display()))?),
        };
        // A template that renders to nothing (e.g. the bond files of a one-NIC site) is not
        // installed: an empty systemd .link file would match every device.
        if is_template && data.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        tree::write_file(&dest, &data, mode)?;
        count += 1;
    }
    Ok(count)
}

/// Git keeps only the executable bit, so modes that matter are decided here: NetworkManager
/// ignores keyfiles others can read, sudo wants 0440, everything else is 0644 or 0755.
pub fn mode_for(rel: &Path, source_mode: u32) -> u32 {
    let s = rel.to_string_lossy();
    if s.starts_with("etc/NetworkManager/system-connections/") {
        0o600
    } else if s.starts_with("etc/sudoers.d/") {
        0o440
    } else if source_mode & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

/// /etc/micromirror: the profile as written, the files it names beside itself (CA certificates),
/// and the catalog entries of the hosted projects.
fn install_site_config(site: &LoadedProfile, catalog: &Path, root: &Path, peers: &Peers) -> Result<()> {
    let etc = root.join("etc/micromirror");
    tree::write_file(&etc.join("site.toml"), site.text.as_bytes(), 0o644)?;
    tree::write_file(
        &etc.join(schema::paths::SYNC_PEERS_FILE),
        serde_json::to_string_pretty(peers)?.as_bytes(),
        0o644,
    )?;
    let access = &site.profile.access;
    let keys: String = access.ssh_keys.iter().map(|k| format!("{}\n", k.trim())).collect();
    tree::write_file(&root.join("etc/ssh/authorized_keys").join(&access.admin_user), keys.as_bytes(), 0o644)?;
    for p in &site.projects {
        let src = catalog.join(format!("{}.toml", p.name));
        let data = fs_err::read(&src).with_context(|| format!("reading {}", src.display()))?;
        tree::write_file(&etc.join("projects").join(format!("{}.toml", p.name)), &data, 0o644)?;
    }
    let profile_dir = site.path.parent().unwrap_or(Path::new("."));
    for rel in site.profile.side_files() {
        let src = profile_dir.join(rel);
        let data = fs_err::read(&src)
            .with_context(|| format!("reading {} (named in {})", src.display(), site.path.display()))?;
        tree::write_file(&etc.join(rel), &data, 0o644)?;
    }
    if let Some(key) = crate::update::signing_key(site, None)? {
        let keyring = schema::paths::Paths::appliance().update_keyring();
        tree::write_file(&root.join(keyring.strip_prefix("/")?), &key.keyring()?, 0o644)?;
    }
    Ok(())
}

fn set_timezone(site: &LoadedProfile, root: &Path) -> Result<()> {
    let tz = &site.profile.site.timezone;
    let zone = root.join("usr/share/zoneinfo").join(tz);
    if !zone.exists() {
        bail!(
            "site.timezone `{tz}` in {} is not a zone of the base (no /usr/share/zoneinfo/{tz})",
            site.path.display()
        );
    }
    let link = root.join("etc/localtime");
    let _ = fs_err::remove_file(&link);
    std::os::unix::fs::symlink(format!("../usr/share/zoneinfo/{tz}"), &link).context("linking /etc/localtime")?;
    tree::write_file(&root.join("etc/timezone"), format!("{tz}\n").as_bytes(), 0o644)
}

fn forget_machine_identity(root: &Path) -> Result<()> {
    for rel in MACHINE_IDENTITY {
        let p = root.join(rel);
        if fs_err::symlink_metadata(&p).is_ok() {
            fs_err::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    // Empty (not missing): systemd makes a fresh id on first boot and treats it as first boot.
    tree::write_file(&root.join("etc/machine-id"), b"", 0o444)
}

/// The appliance's users (sysusers.d/micromirror.conf), made now: a read-only /etc cannot take
/// them at boot. The admin's home is made with them, as tmpfiles.d would at boot.
fn make_users(site: &LoadedProfile, root: &Path) -> Result<()> {
    let (sh, root_arg) = (cmd::shell()?, format!("--root={}", root.display()));
    cmd::run(cmd!(sh, "systemd-sysusers {root_arg}")).context("making the appliance's users (systemd-sysusers)")?;
    let admin = &site.profile.access.admin_user;
    let home = root.join("home").join(admin);
    fs_err::create_dir_all(&home)?;
    // The ids sysusers.d fixes for the admin.
    std::os::unix::fs::chown(&home, Some(1000), Some(1000)).with_context(|| format!("chown {}", home.display()))?;
    fs_err::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    Ok(())
}

/// What a read-only root must have settled at build time: systemd's "this tree is up to date"
/// stamps (with none, or an old one, ldconfig, sysusers, the hwdb and the journal catalog would
/// try to write into /etc and /var at boot and fail). Their time is the build time, which is
/// every file's time (`tree::pin_timestamps`), so /usr is never newer.
pub fn seal_read_only(root: &Path, epoch: i64) -> Result<()> {
    let stamp = format!(
        "# The build's time: nothing under /usr is newer, so no boot tries to update /etc or /var.\nTIMESTAMP_NSEC={epoch}000000000\n"
    );
    for dir in ["etc", "var"] {
        tree::write_file(&root.join(dir).join(".updated"), stamp.as_bytes(), 0o644)?;
    }
    // systemd makes a missing mount point at boot, which a read-only root cannot take: every
    // mount unit's `Where=` is made now.
    for point in mount_points(&root.join("etc/systemd/system"))? {
        fs_err::create_dir_all(root.join(point.trim_start_matches('/')))?;
    }
    Ok(())
}

/// The `Where=` of every mount unit in `dir` (rendered, or a template: `Where=` is never templated).
fn mount_points(dir: &Path) -> Result<Vec<String>> {
    let mut points = Vec::new();
    for entry in fs_err::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".mount") || name.ends_with(".mount.j2") {
            let text = fs_err::read_to_string(entry.path())?;
            points.extend(text.lines().filter_map(|l| l.trim().strip_prefix("Where=")).map(str::to_string));
        }
    }
    points.sort();
    Ok(points)
}

fn mask_generators(root: &Path) -> Result<()> {
    let dir = root.join("etc/systemd/system-generators");
    fs_err::create_dir_all(&dir)?;
    for name in GENERATORS_TO_MASK {
        let link = dir.join(name);
        let _ = fs_err::remove_file(&link);
        fs_err::os::unix::fs::symlink("/dev/null", &link)?;
    }
    Ok(())
}

fn systemctl(root: &Path, verb: &str, units: &[&str]) -> Result<()> {
    let (sh, root) = (cmd::shell()?, format!("--root={}", root.display()));
    cmd::run(cmd!(sh, "systemctl {root} {verb} {units...}"))
        .with_context(|| format!("systemctl {verb} in the image tree"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_mount_unit_s_point_is_made_at_build_time_for_the_read_only_root() {
        let units = super::overlay_dir().join("common/etc/systemd/system");
        let points = super::mount_points(&units).unwrap();
        for wanted in ["/efi", "/srv/mirror", "/var/lib/micromirror", "/var/log/journal"] {
            assert!(points.iter().any(|p| p == wanted), "{wanted} in {points:?}");
        }
    }

    use super::*;

    #[test]
    fn undefined_values_are_errors_and_newlines_stay() {
        let env = environment();
        let ctx = minijinja::context! { a => "x" };
        assert_eq!(render(&env, "t", "{{ a }}\n", &ctx).unwrap(), "x\n");
        let err = render(&env, "t.j2", "{{ missing.key }}\n", &ctx).unwrap_err();
        assert!(err.to_string().contains("t.j2"), "{err}");
    }

    #[test]
    fn modes_follow_what_the_daemons_demand() {
        assert_eq!(mode_for(Path::new("etc/NetworkManager/system-connections/wan0.nmconnection"), 0o644), 0o600);
        assert_eq!(mode_for(Path::new("etc/sudoers.d/micromirror"), 0o644), 0o440);
        assert_eq!(mode_for(Path::new("usr/libexec/micromirror/boot-report"), 0o755), 0o755);
        assert_eq!(mode_for(Path::new("etc/hostname"), 0o664), 0o644);
    }

    #[test]
    fn every_enabled_unit_of_ours_is_in_the_overlay() {
        for distro in [Distro::Debian12, Distro::Almalinux9] {
            let ours = |u: &&str| ["mirror", "micromirror", "srv-", "var-", "efi."].iter().any(|p| u.starts_with(p));
            for unit in units_to_enable(distro, true).into_iter().filter(ours) {
                let path = overlay_dir().join("common/etc/systemd/system").join(unit);
                let template = path.with_file_name(format!("{unit}.j2"));
                assert!(path.exists() || template.exists(), "{} missing", path.display());
            }
        }
    }
}

#[cfg(test)]
mod render_tests {
    use super::*;
    use schema::profile::Distro;

    fn render_layer(site: &LoadedProfile, layer: &str) -> Vec<(String, String)> {
        render_templates(site, layer).unwrap()
    }

    fn site(name: &str, distro: Distro) -> LoadedProfile {
        let profiles = crate::workspace().join("profiles");
        let catalog = crate::load::load_catalog(&profiles).unwrap();
        let mut s = schema::profile::load(&profiles.join(format!("{name}.toml")), &catalog).unwrap();
        s.profile.base.distro = distro;
        s
    }

    #[test]
    fn every_template_renders_for_every_site_on_both_bases() {
        for name in crate::load::sites_in(&crate::workspace().join("profiles")) {
            for distro in [Distro::Debian12, Distro::Almalinux9] {
                let s = site(&name, distro);
                for layer in ["common", distro.as_str()] {
                    assert!(!render_layer(&s, layer).is_empty() || layer != "common", "{name}: nothing rendered");
                }
            }
        }
    }

    #[test]
    fn a_bonded_site_gets_an_lacp_bond_named_wan0_on_both_bases() {
        let get = |files: &[(String, String)], name: &str| {
            files.iter().find(|(p, _)| p.ends_with(name)).map(|(_, t)| t.clone()).unwrap_or_default()
        };
        let debian = render_layer(&site("lab-lacp", Distro::Debian12), "debian-12");
        assert!(get(&debian, "10-wan0.link").trim().is_empty(), "no single-NIC rename when bonded");
        let netdev = get(&debian, "05-wan0-bond.netdev");
        assert!(
            netdev.contains("Name=wan0") && netdev.contains("Kind=bond") && netdev.contains("Mode=802.3ad"),
            "{netdev}"
        );
        let members = get(&debian, "15-wan0-members.network");
        assert!(
            members.contains("MACAddress=52:54:00:aa:00:01 52:54:00:aa:00:02")
                && members.contains("Type=ether")
                && members.contains("Bond=wan0"),
            "{members}"
        );
        let alma = render_layer(&site("lab-lacp", Distro::Almalinux9), "almalinux-9");
        let wan0 = get(&alma, "wan0.nmconnection");
        assert!(
            wan0.contains("type=bond")
                && wan0.contains("mode=802.3ad")
                && wan0.contains("address1=198.51.100.20/31,198.51.100.21"),
            "{wan0}"
        );
        for (i, mac) in ["52:54:00:aa:00:01", "52:54:00:aa:00:02"].iter().enumerate() {
            let m = get(&alma, &format!("wan0-member{i}.nmconnection"));
            assert!(
                m.contains("master=wan0") && m.contains("slave-type=bond") && m.contains(&format!("mac-address={mac}")),
                "{m}"
            );
        }
        // A single-NIC site renders none of the bond files.
        let demo = render_layer(&site("demo", Distro::Almalinux9), "almalinux-9");
        assert!(get(&demo, "wan0-member0.nmconnection").trim().is_empty());
        assert!(get(&demo, "wan0.nmconnection").contains("type=ethernet"));
    }

    fn with_class(name: &str, distro: Distro, class: &str) -> LoadedProfile {
        let mut s = site(name, distro);
        s.profile.site.hardware = Some(class.into());
        s.profile.network.nic = Default::default();
        s.profile.network.bond = None;
        s.profile.network.apply_class_default(s.profile.site.hardware_class().unwrap());
        s
    }

    fn file(files: &[(String, String)], name: &str) -> String {
        files.iter().find(|(p, _)| p.ends_with(name)).map(|(_, t)| t.clone()).unwrap_or_default()
    }

    #[test]
    fn each_class_lists_its_drivers_for_both_initramfs_tools() {
        for (class, must) in [("t620", "r8169"), ("t740", "mlx4_en"), ("r220", "ixgbe")] {
            let modules = file(
                &render_layer(&with_class("demo", Distro::Debian12, class), "debian-12"),
                "initramfs-tools/modules",
            );
            let loaded: Vec<&str> = modules.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
            assert!(loaded.contains(&"i6300esb") && loaded.contains(&"dm_verity"), "{class}: {loaded:?}");
            assert!(!loaded.contains(&must) && !loaded.contains(&"virtio_blk"), "udev loads what is there: {loaded:?}");
            let carried = file(
                &render_layer(&with_class("demo", Distro::Debian12, class), "debian-12"),
                "initramfs-tools/micromirror-drivers",
            );
            let carried: Vec<&str> = carried.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
            assert!(carried.contains(&must) && carried.contains(&"virtio_blk"), "{class}: {carried:?}");
            let dracut =
                file(&render_layer(&with_class("demo", Distro::Almalinux9, class), "almalinux-9"), "micromirror.conf");
            assert!(dracut.contains(must) && dracut.contains("force_drivers+=\" i6300esb"), "{class}: {dracut}");
        }
        let t620 = file(
            &render_layer(&with_class("demo", Distro::Debian12, "t620"), "debian-12"),
            "initramfs-tools/micromirror-drivers",
        );
        assert!(!t620.contains("mlx4_en"), "a T620 image carries no ConnectX driver");
    }

    #[test]
    fn the_rsync_daemon_takes_connections_by_the_box_s_link_for_its_clients_and_the_boxes_it_feeds() {
        let max = |files: &[(String, String)]| -> String {
            file(files, "rsyncd.conf")
                .lines()
                .find(|l| l.starts_with("max connections"))
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(max(&render_layer(&site("demo", Distro::Debian12), "common")), "max connections = 20");
        assert_eq!(max(&render_layer(&with_class("demo", Distro::Debian12, "t620"), "common")), "max connections = 20");
        assert_eq!(
            max(&render_layer(&with_class("demo", Distro::Almalinux9, "r220"), "common")),
            "max connections = 100"
        );
    }

    #[test]
    fn an_r220_bonds_every_port_of_its_10g_card_on_both_bases() {
        let debian = render_layer(&with_class("demo", Distro::Debian12, "r220"), "debian-12");
        let members = file(&debian, "15-wan0-members.network");
        assert!(
            members.contains("Driver=ixgbe") && members.contains("Bond=wan0") && !members.contains("MACAddress"),
            "{members}"
        );
        let alma = render_layer(&with_class("demo", Distro::Almalinux9, "r220"), "almalinux-9");
        let m0 = file(&alma, "wan0-member0.nmconnection");
        assert!(m0.contains("driver=ixgbe") && m0.contains("multi-connect=3") && m0.contains("master=wan0"), "{m0}");
        assert!(file(&alma, "wan0-member1.nmconnection").trim().is_empty());
        let t620 = render_layer(&with_class("demo", Distro::Debian12, "t620"), "debian-12");
        assert!(file(&t620, "10-wan0.link").contains("Driver=r8169"));
    }

    #[test]
    fn sshd_and_the_firewall_follow_the_ssh_port() {
        let mut s = site("demo", Distro::Debian12);
        s.profile.access.ssh_port = 7777;
        let common = render_layer(&s, "common");
        assert!(file(&common, "10-micromirror.conf").contains("Port 7777"));
        let nft = file(&common, "nftables.conf");
        assert!(nft.contains("tcp dport { 7777, 80, 443, 873 } accept") && !nft.contains("dport 22 "), "{nft}");
    }
}
