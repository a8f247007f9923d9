//! Where the elected control-plane node copies its etcd snapshots besides
//! its own disk: an S3-compatible object store.
//!
//! In `cluster.toml` the target is `[backup_targets.s3]`, with the keys in
//! a file of the cluster directory (cluster.toml holds nothing secret); a
//! control-plane node's config carries `[cluster.control_plane.etcd_backup_s3]`,
//! the same target with the keys themselves. Objects are named like the
//! node's own snapshots, under the target's prefix
//! (`PREFIX` + `etcd-UNIXTIME.db`), so the newest is the one with the
//! largest time, whoever took it.

use serde::{Deserialize, Serialize};

use super::{Problem, Secret};

/// The region a target names when it names none (what most S3-compatible
/// servers take).
pub const DEFAULT_REGION: &str = "us-east-1";

/// The user metadata header an uploaded snapshot carries its sha256 in,
/// so a reader checks what it fetched without trusting the transport.
pub const SHA256_METADATA: &str = "x-amz-meta-sha256";

/// `[backup_targets.s3]` in cluster.toml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Target {
    /// `https://HOST[:PORT]`: the store's endpoint, addressed path-style
    /// (`/BUCKET/KEY`), which every S3-compatible server answers.
    pub endpoint: String,
    /// The bucket; it must exist.
    pub bucket: String,
    /// Put before each object's name (`etcd/` → `etcd/etcd-1700000000.db`).
    #[serde(default)]
    pub prefix: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// The file, beside cluster.toml unless absolute, holding
    /// `access_key_id` and `secret_access_key` (TOML).
    pub credentials_file: String,
    /// PEM certificates the endpoint's chain must end in; absent, the
    /// image's CA bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// How many snapshots the store keeps (the newest); absent,
    /// `[etcd.backup].retain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain: Option<u32>,
}

/// `[cluster.control_plane.etcd_backup_s3]` in a control-plane node's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Upload {
    pub endpoint: String,
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default = "default_region")]
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    pub retain: u32,
}

/// The credentials file `[backup_targets.s3].credentials_file` names.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

fn default_region() -> String {
    DEFAULT_REGION.to_string()
}

impl S3Target {
    /// What is wrong with the target, keys under `at`.
    pub fn problems(&self, at: &str) -> Vec<Problem> {
        let mut out = place_problems(at, &self.endpoint, &self.bucket, &self.prefix, &self.region);
        if self.credentials_file.trim().is_empty() {
            out.push(Problem::new(
                format!("{at}.credentials_file"),
                "must name the file holding the keys",
            ));
        }
        keeping_problems(at, self.retain, self.ca.as_deref(), &mut out);
        out
    }

    /// The node's view: this target with `credentials` and a retention.
    pub fn upload(&self, credentials: S3Credentials, retain: u32) -> S3Upload {
        S3Upload {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            region: self.region.clone(),
            access_key_id: credentials.access_key_id,
            secret_access_key: credentials.secret_access_key,
            ca: self.ca.clone(),
            retain: self.retain.unwrap_or(retain),
        }
    }
}

impl S3Upload {
    /// What is wrong with the target, keys under `at`.
    pub fn problems(&self, at: &str) -> Vec<Problem> {
        let mut out = place_problems(at, &self.endpoint, &self.bucket, &self.prefix, &self.region);
        out.extend(S3Credentials::problems_of(
            &self.access_key_id,
            &self.secret_access_key,
            at,
        ));
        keeping_problems(at, Some(self.retain), self.ca.as_deref(), &mut out);
        out
    }

    /// The object key of the snapshot taken at `at` (seconds since the epoch).
    pub fn key(&self, at: u64) -> String {
        format!("{}{}", self.prefix, crate::etcd::backup_name(at))
    }

    /// The snapshot times among `keys` (a listing under the prefix),
    /// oldest first; other objects are not ours and are left alone.
    pub fn times<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Vec<u64> {
        let mut times: Vec<u64> = keys
            .into_iter()
            .filter_map(|k| crate::etcd::backup_time(k.strip_prefix(self.prefix.as_str())?))
            .collect();
        times.sort_unstable();
        times.dedup();
        times
    }
}

impl S3Credentials {
    /// Parses the credentials file (named `file` in errors).
    pub fn from_toml(text: &str, file: &str) -> Result<S3Credentials, Problem> {
        let c: S3Credentials =
            toml::from_str(text).map_err(|e| Problem::new(file, e.message().to_string()))?;
        if let Some(p) = Self::problems_of(&c.access_key_id, &c.secret_access_key, file)
            .into_iter()
            .next()
        {
            return Err(p);
        }
        Ok(c)
    }

    fn problems_of(id: &str, secret: &Secret, at: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        let printable = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic());
        if !printable(id) {
            out.push(Problem::new(
                format!("{at}.access_key_id"),
                "must be printable ASCII without spaces",
            ));
        }
        if !printable(secret.expose()) {
            out.push(Problem::new(
                format!("{at}.secret_access_key"),
                "must be printable ASCII without spaces",
            ));
        }
        out
    }
}

/// Checks shared by both views: an https endpoint without a path, an S3
/// bucket name, a prefix that makes plain object keys, a region.
fn place_problems(
    at: &str,
    endpoint: &str,
    bucket: &str,
    prefix: &str,
    region: &str,
) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Err(why) = check_endpoint(endpoint) {
        out.push(Problem::new(format!("{at}.endpoint"), why));
    }
    if let Err(why) = check_bucket(bucket) {
        out.push(Problem::new(format!("{at}.bucket"), why));
    }
    let prefix_ok = prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && !prefix.starts_with('/')
        && !prefix.split('/').any(|part| part == "..");
    if !prefix_ok {
        out.push(Problem::new(
            format!("{at}.prefix"),
            "may hold letters, digits and - _ . / only, not start with / nor hold ..",
        ));
    }
    if region.is_empty()
        || !region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        out.push(Problem::new(
            format!("{at}.region"),
            "must be a region name (letters, digits, -)",
        ));
    }
    out
}

/// A retention of at least one, and a CA that holds certificates.
fn keeping_problems(at: &str, retain: Option<u32>, ca: Option<&str>, out: &mut Vec<Problem>) {
    if retain == Some(0) {
        out.push(Problem::new(
            format!("{at}.retain"),
            "must keep at least 1 snapshot",
        ));
    }
    if let Some(ca) = ca {
        super::validate::certificates(&format!("{at}.ca"), ca, out);
    }
}

/// `https://HOST[:PORT]` with nothing after it: snapshots and signed
/// requests never travel in clear text.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let Some(rest) = endpoint.strip_prefix("https://") else {
        return Err(format!("{endpoint:?} is not an https:// URL"));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "{endpoint:?} must be https://HOST[:PORT] (the bucket is its own key)"
        ));
    }
    if let Some((_, port)) = authority
        .rsplit_once(':')
        .filter(|_| !authority.ends_with(']'))
    {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("{endpoint:?} has a bad port"));
        }
    }
    Ok(())
}

/// S3's bucket naming rules: 3 to 63 lower-case letters, digits, `-` and
/// `.`, starting and ending with a letter or digit.
fn check_bucket(bucket: &str) -> Result<(), String> {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && edge(bucket.chars().next())
        && edge(bucket.chars().last())
        && !bucket.contains("..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{bucket:?} is not a bucket name (3 to 63 of a-z 0-9 . -, a letter or digit at each end)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload() -> S3Upload {
        S3Upload {
            endpoint: "https://10.77.0.1:7070".into(),
            bucket: "etcd-backups".into(),
            prefix: "lab/".into(),
            region: DEFAULT_REGION.into(),
            access_key_id: "nodeimg".into(),
            secret_access_key: Secret::new("s3cr3t-key"),
            ca: None,
            retain: 3,
        }
    }

    #[test]
    fn a_good_target_has_no_problems_and_names_its_objects() {
        let u = upload();
        assert!(u.problems("t").is_empty(), "{:?}", u.problems("t"));
        assert_eq!(u.key(1700000000), "lab/etcd-1700000000.db");
        let listed = [
            "lab/etcd-300.db",
            "lab/etcd-100.db",
            "lab/etcd-100.db.sha256",
            "lab/notes.txt",
            "other/etcd-50.db",
            "lab/etcd-x.db",
        ];
        assert_eq!(u.times(listed), [100, 300]);
    }

    #[test]
    fn each_bad_field_is_named() {
        type Spoil = fn(&mut S3Upload);
        let cases: [(Spoil, &str); 8] = [
            (
                |u| u.endpoint = "http://10.77.0.1:7070".into(),
                "t.endpoint",
            ),
            (|u| u.endpoint = "https://h/bucket".into(), "t.endpoint"),
            (|u| u.endpoint = "https://h:0".into(), "t.endpoint"),
            (|u| u.bucket = "Etcd".into(), "t.bucket"),
            (|u| u.prefix = "/abs".into(), "t.prefix"),
            (|u| u.prefix = "a/../b".into(), "t.prefix"),
            (
                |u| u.secret_access_key = Secret::new("has space"),
                "t.secret_access_key",
            ),
            (|u| u.retain = 0, "t.retain"),
        ];
        for (spoil, key) in cases {
            let mut u = upload();
            spoil(&mut u);
            let keys: Vec<String> = u.problems("t").into_iter().map(|p| p.key).collect();
            assert_eq!(keys, [key], "{u:?}");
        }
    }

    #[test]
    fn credentials_are_read_strictly_and_never_shown() {
        let c = S3Credentials::from_toml(
            "access_key_id = \"id\"\nsecret_access_key = \"sec\"\n",
            "s3-credentials.toml",
        )
        .unwrap();
        assert_eq!(c.secret_access_key.expose(), "sec");
        let u = upload_with(c);
        assert!(!format!("{u:?}").contains("sec\""), "{u:?}");
        let e = S3Credentials::from_toml("access_key_id = \"id\"\n", "f.toml").err();
        assert_eq!(e.map(|p| p.key), Some("f.toml".to_string()));
        let e = S3Credentials::from_toml(
            "access_key_id = \"\"\nsecret_access_key = \"s\"\n",
            "f.toml",
        )
        .err();
        assert_eq!(e.map(|p| p.key), Some("f.toml.access_key_id".to_string()));
    }

    fn upload_with(c: S3Credentials) -> S3Upload {
        S3Target {
            endpoint: "https://s3.example:9000".into(),
            bucket: "b-1".into(),
            prefix: String::new(),
            region: DEFAULT_REGION.into(),
            credentials_file: "s3-credentials.toml".into(),
            ca: None,
            retain: None,
        }
        .upload(c, 24)
    }
}
