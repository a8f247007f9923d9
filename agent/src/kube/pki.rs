//! A control-plane node's Kubernetes certificates, issued by the agent from
//! the CAs in its machine config, each into the directory of the one
//! component that reads it (0700, owned by that component's user): the
//! scheduler cannot read the controller-manager's CA key, and neither can
//! read the API server's keys. kubelets get theirs through TLS bootstrap.
//!
//! The agent keeps an admin identity of its own in memory only (never a
//! file): what it applies the cluster's first objects and approves
//! kubelet serving certificates with.

use std::net::IpAddr;
use std::path::Path;

use contract::kube as spec;

use super::render::{self, dir_of, APISERVER, CONTROLLER_MANAGER, PROXY, SCHEDULER};
use crate::issuer::{write_file, IssueError, Leaf, Pair, Signer};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(transparent)]
    Issue(#[from] IssueError),
    #[error(
        "the config has no [{0}] (with its key): this node cannot issue Kubernetes certificates"
    )]
    Missing(&'static str),
    #[error("writing {path}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The cluster material a control-plane node issues from (PEM).
pub struct Material<'a> {
    pub kubernetes_ca: (&'a str, &'a str),
    pub etcd_ca: (&'a str, &'a str),
    pub front_proxy_ca: (&'a str, &'a str),
    /// The service-account key pair: (public, private).
    pub service_account: (&'a str, &'a str),
}

/// One file of the PKI, before it is written.
pub struct KeyFile {
    pub path: String,
    pub mode: u32,
    pub owner: render::Owner,
    pub text: String,
}

/// The names the API server's certificate answers to.
pub fn apiserver_names(hostname: &str, addresses: &[IpAddr], endpoint_host: &str) -> Leaf {
    let mut dns: Vec<String> = [
        hostname,
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    dns.push(format!("kubernetes.default.svc.{}", spec::CLUSTER_DOMAIN));
    let mut ips = addresses.to_vec();
    ips.push(IpAddr::from([127, 0, 0, 1]));
    ips.push(IpAddr::from(spec::API_SERVICE_IP));
    match endpoint_host.parse::<IpAddr>() {
        Ok(ip) => ips.push(ip),
        Err(_) if !endpoint_host.is_empty() => dns.push(endpoint_host.to_string()),
        Err(_) => {}
    }
    dns.sort();
    dns.dedup();
    Leaf {
        common_name: "kube-apiserver".into(),
        organizations: Vec::new(),
        dns,
        ips,
        server: true,
        client: false,
    }
}

fn client(cn: &str, groups: &[&str]) -> Leaf {
    Leaf {
        common_name: cn.into(),
        organizations: groups.iter().map(|g| g.to_string()).collect(),
        client: true,
        ..Leaf::default()
    }
}

/// Every key and certificate of a control-plane node, issued at `now`.
pub fn issue(
    m: &Material<'_>,
    server: &Leaf,
    now: u64,
    lifetime: u64,
) -> Result<Vec<KeyFile>, PkiError> {
    let expires = now.saturating_add(lifetime);
    let kube = Signer::from_pem(
        "cluster.kubernetes_ca",
        m.kubernetes_ca.0,
        m.kubernetes_ca.1,
    )?;
    let etcd = Signer::from_pem("cluster.etcd_ca", m.etcd_ca.0, m.etcd_ca.1)?;
    let front = Signer::from_pem(
        "cluster.front_proxy_ca",
        m.front_proxy_ca.0,
        m.front_proxy_ca.1,
    )?;
    let mut out = Vec::new();
    let public = |path: String, text: &str| KeyFile {
        path,
        mode: 0o644,
        owner: render::Owner::Root,
        text: text.to_string(),
    };
    out.push(public(
        format!("{}/etcd-ca.crt", spec::PKI_DIR),
        m.etcd_ca.0,
    ));
    out.push(public(
        format!("{}/front-proxy-ca.crt", spec::PKI_DIR),
        m.front_proxy_ca.0,
    ));
    let mut own = |component: &'static str, name: &str, text: &str| {
        out.push(KeyFile {
            path: format!("{}/{name}", dir_of(component)),
            mode: 0o600,
            owner: render::owner_of(component),
            text: text.to_string(),
        });
    };
    let mut pair = |component: &'static str, name: &str, p: Pair| {
        own(component, &format!("{name}.crt"), &p.cert);
        own(component, &format!("{name}.key"), &p.key);
    };
    pair(APISERVER, "server", kube.issue(server, now, expires)?);
    // the API server reaches kubelets (logs, exec) as a cluster admin
    let kubelet_client = client("kube-apiserver-kubelet-client", &["system:masters"]);
    pair(
        APISERVER,
        "kubelet-client",
        kube.issue(&kubelet_client, now, expires)?,
    );
    let etcd_client = client("kube-apiserver-etcd-client", &[]);
    pair(
        APISERVER,
        "etcd-client",
        etcd.issue(&etcd_client, now, expires)?,
    );
    let proxy_client = client("front-proxy-client", &[]);
    pair(
        APISERVER,
        "front-proxy-client",
        front.issue(&proxy_client, now, expires)?,
    );
    for (component, cn) in [
        (CONTROLLER_MANAGER, "system:kube-controller-manager"),
        (SCHEDULER, "system:kube-scheduler"),
        (PROXY, "system:kube-proxy"),
    ] {
        pair(
            component,
            "client",
            kube.issue(&client(cn, &[]), now, expires)?,
        );
    }
    own(APISERVER, "sa.pub", m.service_account.0);
    own(APISERVER, "sa.key", m.service_account.1);
    own(CONTROLLER_MANAGER, "sa.key", m.service_account.1);
    // the controller-manager signs kubelets' certificates (CSR signers)
    own(CONTROLLER_MANAGER, "ca.key", m.kubernetes_ca.1);
    Ok(out)
}

/// The agent's own admin identity, in memory.
pub fn agent_identity(
    kubernetes_ca: (&str, &str),
    hostname: &str,
    now: u64,
    lifetime: u64,
) -> Result<Pair, PkiError> {
    let kube = Signer::from_pem("cluster.kubernetes_ca", kubernetes_ca.0, kubernetes_ca.1)?;
    let leaf = client(&format!("nodeimg-agent:{hostname}"), &["system:masters"]);
    Ok(kube.issue(&leaf, now, now.saturating_add(lifetime))?)
}

/// Makes `dir` with `mode`, owned by `uid:gid`.
pub fn make_dir(dir: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), PkiError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| PkiError::Write {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(err)
}

/// Writes one file, owner resolved by `owner_of`.
pub fn write(path: &str, text: &str, mode: u32, (uid, gid): (u32, u32)) -> Result<(), PkiError> {
    Ok(write_file(Path::new(path), text, mode, uid, gid)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use rcgen::{CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

    fn ca(name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = p.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// What x509-parser (an independent reader) finds in a PEM certificate:
    /// (subject CN, organizations, server usage, client usage, DNS SANs).
    fn facts(pem: &str) -> (String, Vec<String>, bool, bool, Vec<String>) {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let c = p.parse_x509().unwrap();
        let cn = c
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        let orgs = c
            .subject()
            .iter_organization()
            .map(|o| o.as_str().unwrap().to_string())
            .collect();
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        let dns = c
            .subject_alternative_name()
            .unwrap()
            .map(|s| {
                s.value
                    .general_names
                    .iter()
                    .filter_map(|g| match g {
                        x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        (cn, orgs, eku.server_auth, eku.client_auth, dns)
    }

    /// The identities and usages each component needs, one row each.
    #[test]
    fn every_certificate_has_its_identity_and_usage() {
        let (k, e, f) = (ca("kubernetes"), ca("etcd"), ca("front-proxy"));
        let m = Material {
            kubernetes_ca: (&k.0, &k.1),
            etcd_ca: (&e.0, &e.1),
            front_proxy_ca: (&f.0, &f.1),
            service_account: ("PUB", "PRIV"),
        };
        let addr: IpAddr = "10.77.0.11".parse().unwrap();
        let server = apiserver_names("cp-1", &[addr], "10.77.0.11");
        let files = issue(&m, &server, 1_800_000_000, 3600).unwrap();
        let get = |p: &str| {
            files
                .iter()
                .find(|f| f.path == format!("{}/{p}", spec::PKI_DIR))
                .unwrap_or_else(|| panic!("no {p}"))
        };
        let rows: &[(&str, &str, &[&str], bool, bool)] = &[
            (
                "kube-apiserver/server.crt",
                "kube-apiserver",
                &[],
                true,
                false,
            ),
            (
                "kube-apiserver/kubelet-client.crt",
                "kube-apiserver-kubelet-client",
                &["system:masters"],
                false,
                true,
            ),
            (
                "kube-apiserver/etcd-client.crt",
                "kube-apiserver-etcd-client",
                &[],
                false,
                true,
            ),
            (
                "kube-apiserver/front-proxy-client.crt",
                "front-proxy-client",
                &[],
                false,
                true,
            ),
            (
                "kube-controller-manager/client.crt",
                "system:kube-controller-manager",
                &[],
                false,
                true,
            ),
            (
                "kube-scheduler/client.crt",
                "system:kube-scheduler",
                &[],
                false,
                true,
            ),
            (
                "kube-proxy/client.crt",
                "system:kube-proxy",
                &[],
                false,
                true,
            ),
        ];
        for (path, cn, orgs, server, client) in rows {
            let f = get(path);
            let (got_cn, got_orgs, s, c, _) = facts(&f.text);
            assert_eq!(&got_cn, cn, "{path}");
            assert_eq!(got_orgs, *orgs, "{path}");
            assert_eq!((s, c), (*server, *client), "{path}: serverAuth, clientAuth");
            assert_eq!(f.mode, 0o600, "{path}");
            let component = path.split('/').next().unwrap();
            let owner = match component {
                "kube-proxy" => render::Owner::Root,
                c => render::Owner::Service(
                    [APISERVER, CONTROLLER_MANAGER, SCHEDULER]
                        .into_iter()
                        .find(|n| *n == c)
                        .unwrap(),
                ),
            };
            assert_eq!(f.owner, owner, "{path} belongs to {component}");
        }
        let (_, _, _, _, dns) = facts(&get("kube-apiserver/server.crt").text);
        for name in ["cp-1", "kubernetes.default.svc.cluster.local", "localhost"] {
            assert!(dns.iter().any(|d| d == name), "{name} in {dns:?}");
        }
        // the CA key is the controller-manager's alone
        let holders: Vec<&str> = files
            .iter()
            .filter(|f| f.text == k.1)
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(
            holders,
            ["/etc/kubernetes/pki/kube-controller-manager/ca.key"]
        );
        assert_eq!(get("etcd-ca.crt").mode, 0o644);
    }

    #[test]
    fn a_missing_ca_key_is_an_error_naming_the_table() {
        let k = ca("kubernetes");
        let e = issue(
            &Material {
                kubernetes_ca: (&k.0, &k.1),
                etcd_ca: (&k.0, "not a key"),
                front_proxy_ca: (&k.0, &k.1),
                service_account: ("", ""),
            },
            &apiserver_names("cp-1", &[], ""),
            1_800_000_000,
            60,
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("cluster.etcd_ca"), "{e}");
    }
}
