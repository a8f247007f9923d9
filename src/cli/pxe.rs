//! `nodeimg pxe serve DIR [--listen ADDR]`: serve a PXE bundle folder (a
//! build's `pxe/`, or the build directory holding it) over HTTP until
//! interrupted. The bound address goes to stdout; each request is logged on
//! stderr.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nodeimg::output::pxe_bundle::{PXE_DIR, SCRIPT_FILE};
use nodeimg::pxe_server::{serve, DEFAULT_LISTEN};

#[derive(Debug, clap::Args)]
pub struct PxeArgs {
    #[command(subcommand)]
    pub command: PxeCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PxeCommand {
    /// Serve DIR's PXE bundle (boot.ipxe, vmlinuz, initrd.img) over HTTP for iPXE.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The bundle folder, or a build directory with a pxe/ folder.
    pub dir: PathBuf,
    /// Address to listen on; iPXE then chains http://ADDR/boot.ipxe.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
}

pub fn run(args: PxeArgs) -> anyhow::Result<i32> {
    match args.command {
        PxeCommand::Serve(a) => serve_bundle(a),
    }
}

/// A build directory names its bundle folder; a bundle folder is itself.
fn bundle_dir(dir: &Path) -> PathBuf {
    let nested = dir.join(PXE_DIR);
    if !dir.join(SCRIPT_FILE).is_file() && nested.join(SCRIPT_FILE).is_file() {
        nested
    } else {
        dir.to_path_buf()
    }
}

fn serve_bundle(args: ServeArgs) -> anyhow::Result<i32> {
    let dir = bundle_dir(&args.dir);
    let server =
        serve(&dir, args.listen).with_context(|| format!("serving {}", args.dir.display()))?;
    println!("http://{}/{SCRIPT_FILE}", server.addr());
    server.wait();
    Ok(0)
}
