//! Whether an image can serve what a config asks of it: a control-plane
//! config on an image without etcd would boot and then never form a
//! cluster, so it is refused before it is ever delivered.

use super::{MachineConfig, Problem, Role};

/// The Debian package whose presence makes an image able to run etcd.
pub const ETCD_PACKAGE: &str = "etcd-server";
/// The Debian package whose presence makes an image able to run containers.
pub const CONTAINERD_PACKAGE: &str = "containerd";

/// What an image can run, read from its manifest by the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFacts {
    /// `<name> <version>` as the manifest says, for messages.
    pub image: String,
    /// etcd is installed: the image can be a control-plane node.
    pub has_etcd: bool,
    /// containerd is installed: the `[containerd]` settings have a reader.
    pub has_containerd: bool,
}

impl ImageFacts {
    /// Facts from the names of the packages installed in the image.
    pub fn from_packages<'a>(
        image: impl Into<String>,
        packages: impl IntoIterator<Item = &'a str>,
    ) -> ImageFacts {
        let mut f = ImageFacts {
            image: image.into(),
            ..ImageFacts::default()
        };
        for p in packages {
            f.has_etcd |= p == ETCD_PACKAGE;
            f.has_containerd |= p == CONTAINERD_PACKAGE;
        }
        f
    }
}

/// Every way `config` asks for something `image` cannot do.
pub fn check_against_image(config: &MachineConfig, image: &ImageFacts) -> Result<(), Vec<Problem>> {
    let mut out = Vec::new();
    if config.role == Role::ControlPlane && !image.has_etcd {
        out.push(Problem::new(
            "role",
            format!(
                "control-plane needs etcd, but image {} has no {ETCD_PACKAGE} package: use a control-plane image or role = \"worker\"",
                image.image
            ),
        ));
    }
    let c = &config.containerd;
    let asks_containerd = !c.registry_mirrors.is_empty() || !c.registry_credentials.is_empty();
    if asks_containerd && !image.has_containerd {
        out.push(Problem::new(
            "containerd",
            format!(
                "image {} has no {CONTAINERD_PACKAGE} package to use these settings",
                image.image
            ),
        ));
    }
    if out.is_empty() {
        Ok(())
    } else {
        Err(out)
    }
}
