//! OCI images the builder packs into the root image for containerd to
//! import at boot (air-gapped nodes never pull): the list nodeagent reads
//! from `/usr/lib/nodeimg/images.json`.

use serde::{Deserialize, Serialize};

/// Where the list lives on the verified root.
pub const IMAGES_FILE: &str = "/usr/lib/nodeimg/images.json";
/// Where the archives live on the verified root.
pub const IMAGES_DIR: &str = "/usr/lib/nodeimg/images";

/// The sandbox ("pause") image: containerd's `sandbox_image`, and the
/// one that carries the runtime's confinement probe (`/pause probe`).
pub const SANDBOX_IMAGE: &str = "nodeimg.local/pause:0.1.0";

/// One preloaded image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreloadedImage {
    /// The name containerd lists it under, e.g. `nodeimg.local/pause:0.1.0`.
    pub name: String,
    /// The OCI archive's file name in [`IMAGES_DIR`].
    pub file: String,
    /// `sha256:<hex>` of the image manifest: what containerd must report.
    pub digest: String,
}

/// `repo@digest` for `repo:tag`: the name containerd's CRI looks a pod's
/// `image: repo:tag@digest` up by (it drops the tag, as Docker's
/// reference parser does). An import names the image by its tag only, so
/// nodeagent adds this name for each image pods name by digest.
pub fn digest_name(name: &str, digest: &str) -> String {
    let repo = match name.rsplit_once(':') {
        // a colon before the last slash is a registry's port, not a tag
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    };
    format!("{repo}@{digest}")
}

/// A file name for an image name: `nodeimg.local/pause:0.1.0` →
/// `nodeimg.local_pause_0.1.0.tar`.
pub fn archive_name(image: &str) -> String {
    let safe: String = image
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c,
            _ => '_',
        })
        .collect();
    format!("{safe}.tar")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_names_drop_the_tag_but_keep_a_port() {
        assert_eq!(
            digest_name("nodeimg.local/coredns:v1.15.0", "sha256:ab"),
            "nodeimg.local/coredns@sha256:ab"
        );
        assert_eq!(
            digest_name("registry:5000/team/app:1", "sha256:ab"),
            "registry:5000/team/app@sha256:ab"
        );
        assert_eq!(
            digest_name("registry:5000/team/app", "sha256:ab"),
            "registry:5000/team/app@sha256:ab"
        );
    }

    #[test]
    fn archive_names_are_plain_file_names() {
        assert_eq!(
            archive_name("nodeimg.local/pause:0.1.0"),
            "nodeimg.local_pause_0.1.0.tar"
        );
        assert_eq!(archive_name("../x/../y"), ".._x_.._y.tar");
        assert!(!archive_name("a/b").contains('/'));
    }

    #[test]
    fn list_round_trips() {
        let list = vec![PreloadedImage {
            name: "nodeimg.local/pause:0.1.0".into(),
            file: "nodeimg.local_pause_0.1.0.tar".into(),
            digest: format!("sha256:{}", "ab".repeat(32)),
        }];
        let text = serde_json::to_string(&list).unwrap_or_default();
        let back: Vec<PreloadedImage> = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(back, list);
    }
}
