//! The narrow approver of kubelet serving certificates (signer
//! `kubernetes.io/kubelet-serving`): kube-controller-manager never approves
//! these, since only something that knows the nodes can tell whether the
//! names asked for are the requester's. A CSR is approved only when its
//! requester is `system:node:NAME`, its subject is that node in
//! `system:nodes`, its DNS names are NAME alone, and each IP address is one
//! the Node object reports; an address of a configured control-plane member
//! only for that member. Anything else is left pending, with the reason in
//! the report. It also approves a worker agent's request for kube-proxy's
//! client certificate (`proxy_cert.rs`), and nothing else of that signer.

use std::net::IpAddr;

use base64::Engine;
use serde_json::{json, Value};

use super::at;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

pub const SIGNER: &str = "kubernetes.io/kubelet-serving";

/// What the approver makes of one CSR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not a pending kubelet-serving CSR: none of the approver's business.
    Ignore,
    Approve {
        node: String,
    },
    Refuse(String),
}

/// The names a CSR asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Asked {
    pub common_name: Option<String>,
    pub organizations: Vec<String>,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// Email addresses, URIs and other names: never in a kubelet's.
    pub other: usize,
}

/// Reads the PEM CSR of `spec.request` (base64 of PEM).
pub fn read_request(b64: &str) -> Result<Asked, String> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "spec.request is not base64".to_string())?;
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| format!("spec.request is not PEM: {e}"))?;
    let (_, csr) = X509CertificationRequest::from_der(&block.contents)
        .map_err(|e| format!("spec.request is not a CSR: {e}"))?;
    let subject = &csr.certification_request_info.subject;
    let mut asked = Asked {
        common_name: subject
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .map(str::to_string),
        organizations: subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_string))
            .collect(),
        ..Asked::default()
    };
    for ext in csr.requested_extensions().into_iter().flatten() {
        let ParsedExtension::SubjectAlternativeName(san) = ext else {
            continue;
        };
        for name in &san.general_names {
            match name {
                GeneralName::DNSName(d) => asked.dns.push(d.to_string()),
                GeneralName::IPAddress(b) => match <[u8; 4]>::try_from(*b) {
                    Ok(v4) => asked.ips.push(IpAddr::from(v4)),
                    Err(_) => match <[u8; 16]>::try_from(*b) {
                        Ok(v6) => asked.ips.push(IpAddr::from(v6)),
                        Err(_) => asked.other += 1,
                    },
                },
                _ => asked.other += 1,
            }
        }
    }
    Ok(asked)
}

/// The verdict on `csr` (a CertificateSigningRequest object).
/// `reported(node)`: the addresses that node's Node object reports;
/// `members`: the configured control-plane members (name, address).
pub fn judge(
    csr: &Value,
    reported: impl Fn(&str) -> Vec<IpAddr>,
    members: &[(String, IpAddr)],
) -> Verdict {
    let spec = at(csr, "/spec");
    let pending = at(csr, "/status/conditions")
        .as_array()
        .is_none_or(|c| c.is_empty());
    if !pending {
        return Verdict::Ignore;
    }
    if at(spec, "/signerName") == super::proxy_cert::SIGNER {
        return judge_proxy(spec);
    }
    if at(spec, "/signerName") != SIGNER {
        return Verdict::Ignore;
    }
    let Some(node) = at(spec, "/username")
        .as_str()
        .and_then(|u| u.strip_prefix("system:node:"))
    else {
        return Verdict::Refuse(format!("requester {} is no node", at(spec, "/username")));
    };
    let asked = match read_request(at(spec, "/request").as_str().unwrap_or_default()) {
        Ok(a) => a,
        Err(why) => return Verdict::Refuse(why),
    };
    let want_cn = format!("system:node:{node}");
    if asked.common_name.as_deref() != Some(want_cn.as_str())
        || asked.organizations != ["system:nodes"]
    {
        return Verdict::Refuse(format!(
            "subject {:?} {:?} is not {want_cn} in system:nodes",
            asked.common_name, asked.organizations
        ));
    }
    if asked.other > 0 {
        return Verdict::Refuse("asks for names other than DNS names and IP addresses".into());
    }
    if let Some(d) = asked.dns.iter().find(|d| *d != node) {
        return Verdict::Refuse(format!("asks for DNS name {d}, not the node's own {node}"));
    }
    let known = reported(node);
    for ip in &asked.ips {
        if let Some((owner, _)) = members.iter().find(|(n, a)| a == ip && n != node) {
            return Verdict::Refuse(format!("asks for {ip}, control-plane member {owner}'s"));
        }
        if !known.contains(ip) {
            return Verdict::Refuse(format!("asks for {ip}, which node {node} does not report"));
        }
    }
    Verdict::Approve {
        node: node.to_string(),
    }
}

/// A worker's agent asking, as its node, for kube-proxy's client
/// certificate: approved when that is all it asks for. Any other CSR to the
/// API-client signer is not the agent's business (an admin's tool may use it).
fn judge_proxy(spec: &Value) -> Verdict {
    use super::proxy_cert::{COMMON_NAME, USAGES};
    let Some(node) = at(spec, "/username")
        .as_str()
        .and_then(|u| u.strip_prefix("system:node:"))
    else {
        return Verdict::Ignore;
    };
    let Ok(asked) = read_request(at(spec, "/request").as_str().unwrap_or_default()) else {
        return Verdict::Ignore;
    };
    if asked.common_name.as_deref() != Some(COMMON_NAME) {
        return Verdict::Ignore;
    }
    let usages_ok = at(spec, "/usages").as_array().is_some_and(|u| {
        u.iter()
            .all(|x| x.as_str().is_some_and(|x| USAGES.contains(&x)))
    });
    if !asked.organizations.is_empty()
        || !asked.dns.is_empty()
        || !asked.ips.is_empty()
        || asked.other > 0
        || !usages_ok
    {
        return Verdict::Refuse(format!(
            "node {node} asks for {COMMON_NAME} with more than its name and client usage"
        ));
    }
    Verdict::Approve {
        node: node.to_string(),
    }
}

/// The CSR with an Approved condition, for `PUT …/approval`.
pub fn approved(csr: &Value, node: &str) -> Value {
    let mut out = csr.clone();
    let condition = json!({
        "type": "Approved",
        "status": "True",
        "reason": "NodeimgAgentApproved",
        "message": format!("the names are node {node}'s own (nodeimg agent)"),
    });
    if let Some(o) = out.as_object_mut() {
        let status = o.entry("status").or_insert_with(|| json!({}));
        if let Some(s) = status.as_object_mut() {
            s.insert("conditions".into(), json!([condition]));
        }
    }
    out
}

/// The addresses a Node object reports.
pub fn node_addresses(node: &Value) -> Vec<IpAddr> {
    at(node, "/status/addresses")
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| at(x, "/address").as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn csr(cn: &str, orgs: &[&str], dns: &[&str], ips: &[&str], user: &str) -> Value {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        for o in orgs {
            p.distinguished_name.push(DnType::OrganizationName, *o);
        }
        p.distinguished_name.push(DnType::CommonName, cn);
        for d in dns {
            p.subject_alt_names
                .push(SanType::DnsName((*d).try_into().unwrap()));
        }
        for i in ips {
            p.subject_alt_names
                .push(SanType::IpAddress(i.parse().unwrap()));
        }
        let pem = p.serialize_request(&key).unwrap().pem().unwrap();
        json!({
            "metadata": { "name": "csr-1" },
            "spec": {
                "signerName": SIGNER,
                "username": user,
                "request": base64::engine::general_purpose::STANDARD.encode(pem),
            },
        })
    }

    fn reported(node: &str) -> Vec<IpAddr> {
        match node {
            "worker-1" => vec!["10.77.0.21".parse().unwrap()],
            "cp-1" => vec!["10.77.0.11".parse().unwrap()],
            _ => Vec::new(),
        }
    }

    fn members() -> Vec<(String, IpAddr)> {
        vec![("cp-1".into(), "10.77.0.11".parse().unwrap())]
    }

    #[test]
    fn only_a_nodes_own_names_are_approved() {
        let n = "system:node:worker-1";
        let ok = csr(n, &["system:nodes"], &["worker-1"], &["10.77.0.21"], n);
        assert_eq!(
            judge(&ok, reported, &members()),
            Verdict::Approve {
                node: "worker-1".into()
            }
        );
        let refused = |c: Value, why: &str| match judge(&c, reported, &members()) {
            Verdict::Refuse(r) => assert!(r.contains(why), "{r} lacks {why}"),
            v => panic!("{v:?}, wanted a refusal for {why}"),
        };
        // another node's DNS name, an address it does not report, a
        // control-plane member's address, someone else's subject, a
        // requester that is no node
        refused(
            csr(n, &["system:nodes"], &["cp-1"], &[], n),
            "DNS name cp-1",
        );
        refused(
            csr(n, &["system:nodes"], &["worker-1"], &["10.77.0.99"], n),
            "does not report",
        );
        refused(
            csr(n, &["system:nodes"], &["worker-1"], &["10.77.0.11"], n),
            "member cp-1",
        );
        refused(
            csr("system:node:cp-1", &["system:nodes"], &[], &[], n),
            "subject",
        );
        refused(csr(n, &["system:masters"], &[], &[], n), "subject");
        refused(csr(n, &["system:nodes"], &[], &[], "alice"), "no node");
        // another signer's, or one already decided: not ours
        let mut other = ok.clone();
        other["spec"]["signerName"] = json!("kubernetes.io/kube-apiserver-client-kubelet");
        assert_eq!(judge(&other, reported, &members()), Verdict::Ignore);
        // kube-proxy's certificate, asked for by a node, and nothing more
        let (mut proxy, _) = super::super::proxy_cert::request("p").unwrap();
        proxy["spec"]["username"] = json!(n);
        assert_eq!(
            judge(&proxy, reported, &members()),
            Verdict::Approve {
                node: "worker-1".into()
            }
        );
        let mut groups = csr(
            super::super::proxy_cert::COMMON_NAME,
            &["system:masters"],
            &[],
            &[],
            n,
        );
        groups["spec"]["signerName"] = json!(super::super::proxy_cert::SIGNER);
        groups["spec"]["usages"] = json!(["client auth"]);
        assert!(matches!(
            judge(&groups, reported, &members()),
            Verdict::Refuse(_)
        ));
        proxy["spec"]["username"] = json!("alice");
        assert_eq!(judge(&proxy, reported, &members()), Verdict::Ignore);
        let done = approved(&ok, "worker-1");
        assert_eq!(done["status"]["conditions"][0]["type"], "Approved");
        assert_eq!(judge(&done, reported, &members()), Verdict::Ignore);
    }
}
