//! `cargo xtask`: the developer's and operator's entry point. Each subcommand lives in its own
//! module; `image` is the command line over the build library (xtask/build), `boot` over the
//! VM library (xtask/vm); the rest drive disks, the fleet's tools, tests and benchmarks.

mod adopt;
#[cfg(test)]
mod architecture_map;
mod bench;
mod boot;
mod build_image;
mod flash;
mod fleet;
mod installer;
mod many_sites;
mod paths;
mod profiles;
mod publish;
mod release;
mod render;
mod site_image;
mod testing;

use build::{cmd, host, progress};

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, boot and test micro mirror images")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bake the disk image of a site (or --sites a,b / --all): target/images/SITE/SITE.img, .img.zst, manifest.json, update/
    Image(build_image::ImageArgs),
    /// Lay a site's built update out in a served folder (DIR/SITE/), signed, newest versions only
    Publish(publish::PublishArgs),
    /// Refresh the bases, rebuild the sites whose inputs changed, publish to the canaries, then,
    /// once every canary runs the new version blessed, to the rest
    Release(release::ReleaseArgs),
    /// Write a site's rendered templates (the overlay's *.j2: network, firewall, rsyncd, chrony,
    /// hosts, initramfs modules …) into a folder, as they land in the image
    Render(render::RenderArgs),
    /// Boot a throwaway copy of a site's image in QEMU, serial console on this terminal
    Boot(boot::BootArgs),
    /// Write a site's image onto a disk, safely (the `dd` step)
    Flash(flash::FlashArgs),
    /// Move a running fleet box onto the image over SSH, keeping its mirror data (preflight first)
    Adopt(adopt::AdoptArgs),
    /// Write a USB installer for a site: booted by remote hands, it converts the box (keeping the
    /// mirror data, or a clean flash once confirmed) and powers off
    Installer(installer::InstallerArgs),
    /// The fleet on Prometheus (config, rules, dashboard) and one status table of every box
    Fleet {
        #[command(subcommand)]
        command: fleet::FleetCommand,
    },
    /// Validate site profiles and the project catalog
    Profiles {
        #[command(subcommand)]
        command: profiles::ProfilesCommand,
    },
    /// Benchmarks beside a peer: server (nginx), image (mkosi), sync (bare rsync)
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// Install what the tests need, then run every test (what CI runs)
    Test(testing::TestArgs),
}

fn main() {
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        Command::Image(args) => build_image::command(args),
        Command::Publish(args) => publish::run(args),
        Command::Release(args) => release::run(args),
        Command::Render(args) => render::run(args),
        Command::Boot(args) => boot::run(args),
        Command::Flash(args) => flash::run(args),
        Command::Adopt(args) => adopt::run(args),
        Command::Installer(args) => installer::run(args),
        Command::Fleet { command } => fleet::run(command),
        Command::Profiles { command } => profiles::run(command),
        Command::Test(args) => testing::run(args),
        Command::Bench { command } => bench::run(command),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
