//! The contract between nodeimg's builder and its agent: what one side
//! writes and the other reads. Both link this crate, so a change here is a
//! change to both, checked by one compiler.
//!
//! - [`cmdline`]: the `nodeimg.*` kernel command line: one typed model, one
//!   builder ([`std::fmt::Display`]) and one parser ([`config_url`]: its
//!   `nodeimg.config` URL);
//! - [`report`]: the `NODEIMG-REPORT {json}` boot report and the other
//!   console line prefixes;
//! - [`paths`]: the files both sides name on the image and in the initramfs;
//! - [`gpt`]: pure GPT header and entry parsing (bytes in, typed out);
//! - [`config`]: the machine config (versioned TOML) and its checks;
//! - [`services`]: the daemons layers declare and nodeagent supervises;
//! - [`images`]: the OCI images packed into the root for containerd;
//! - [`api`]: the node API's wire protocol (requests, answers, checks);
//! - [`stack`]: the cluster's security stack as Kubernetes objects;
//! - [`yaml`]: the block YAML the stack's files are written in;
//! - [`ntp`]: NTP's packet and on-wire arithmetic (the lab's time server
//!   and the agent's client).
//!
//! It does no I/O (callers hand it bytes and text), never panics, and needs
//! nothing but pure-Rust crates, so it builds inside the static agent.

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod api;
pub mod cmdline;
pub mod config;
pub mod config_url;
pub mod etcd;
pub mod gpt;
pub mod images;
pub mod kube;
pub mod ntp;
pub mod paths;
pub mod report;
pub mod services;
pub mod stack;
pub mod yaml;

#[cfg(test)]
mod props;
