//! Property tests for the machine config and `cluster.toml` readers: any
//! text is a config or a [`ConfigError`] that names the file, never a
//! panic; a good document cut short or with a byte changed is the same;
//! and whatever reads prints back to TOML that reads the same. Bounded;
//! failures are not persisted into the source tree.

use super::*;
use proptest::prelude::*;

const CA_CRT: &str = include_str!("../../testdata/ca.crt");
const NODE_CRT: &str = include_str!("../../testdata/node.crt");
const NODE_KEY: &str = include_str!("../../testdata/node.key");

const FILE: &str = "dir/node.toml";

use super::cluster_tests::CLUSTER_TOML as CLUSTER;
use super::tests::WORKER;

fn worker() -> String {
    format!(
        "{WORKER}\n[api]\nclient_ca = '''\n{CA_CRT}'''\ncertificate = '''\n{NODE_CRT}'''\nkey = '''\n{NODE_KEY}'''\n"
    )
}

/// One way to damage a document.
#[derive(Debug, Clone)]
enum Mutation {
    /// Keep the first n bytes.
    Truncate(prop::sample::Index),
    /// XOR one byte.
    Flip(prop::sample::Index, u8),
    /// Drop one line.
    DropLine(prop::sample::Index),
    /// Repeat one line (a duplicate key or table).
    DupLine(prop::sample::Index),
    /// Put text at a line start.
    Insert(prop::sample::Index, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        (any::<prop::sample::Index>(), 1u8..).prop_map(|(i, x)| Mutation::Flip(i, x)),
        any::<prop::sample::Index>().prop_map(Mutation::DropLine),
        any::<prop::sample::Index>().prop_map(Mutation::DupLine),
        (
            any::<prop::sample::Index>(),
            prop_oneof![
                Just("schema = 2\n".to_string()),
                Just("[api]\n".to_string()),
                Just("[[network.interfaces]]\n".to_string()),
                Just("[[control_plane.members]]\n".to_string()),
                Just("x = 1\n".to_string()),
                Just("hostname = \"\"\n".to_string()),
                Just("retain = -1\n".to_string()),
                Just("interval = \"0s\"\n".to_string()),
                "[a-z_.\\[\\]]{1,12} = [\"0-9a-z:/.]{0,12}\n",
            ]
        )
            .prop_map(|(i, s)| Mutation::Insert(i, s)),
    ]
}

/// `text` with the mutations applied; bytes that stop being UTF-8 are
/// replaced, as a reader of a file would have to.
fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for m in mutations {
        let lines = |b: &[u8]| -> Vec<Vec<u8>> {
            b.split_inclusive(|&c| c == b'\n')
                .map(<[u8]>::to_vec)
                .collect()
        };
        match m {
            Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
            Mutation::Flip(i, x) => {
                if !bytes.is_empty() {
                    let at = i.index(bytes.len());
                    bytes[at] ^= x;
                }
            }
            Mutation::DropLine(i) => {
                let mut l = lines(&bytes);
                if !l.is_empty() {
                    l.remove(i.index(l.len()));
                }
                bytes = l.concat();
            }
            Mutation::DupLine(i) => {
                let mut l = lines(&bytes);
                if !l.is_empty() {
                    let at = i.index(l.len());
                    l.insert(at, l[at].clone());
                }
                bytes = l.concat();
            }
            Mutation::Insert(i, s) => {
                let mut l = lines(&bytes);
                l.insert(i.index(l.len() + 1), s.as_bytes().to_vec());
                bytes = l.concat();
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A refusal names the file, and a Toml error's line is in the text.
fn names_the_file(e: &ConfigError, text: &str) -> Result<(), TestCaseError> {
    let shown = e.to_string();
    prop_assert!(shown.starts_with(FILE), "{}", shown);
    if let ConfigError::Toml { line, column, .. } = e {
        prop_assert!(
            *line >= 1 && *line <= text.lines().count().max(1) + 1,
            "{}",
            shown
        );
        prop_assert!(*column >= 1, "{}", shown);
    }
    Ok(())
}

proptest! {
    #![proptest_config(crate::props::bounded(512))]

    /// Any text: a config or an error naming the file.
    #[test]
    fn any_text_reads_or_is_refused(text in any::<String>()) {
        if let Err(e) = MachineConfig::from_toml(&text, FILE) {
            names_the_file(&e, &text)?;
        }
        if let Err(e) = ClusterConfig::from_toml(&text, FILE) {
            names_the_file(&e, &text)?;
        }
    }

    /// Random TOML-ish lines reach the schema and key checks.
    #[test]
    fn tomlish_text_reads_or_is_refused(
        lines in prop::collection::vec(
            "(schema = [0-9]{1,3}|\\[{1,2}[a-z_.]{0,16}\\]{1,2}|[a-z_]{1,12} = (\"[a-z0-9:./-]{0,12}\"|[0-9-]{1,4}|true|\\[\\]))",
            0..16,
        )
    ) {
        let text = lines.join("\n");
        for e in [
            MachineConfig::from_toml(&text, FILE).err(),
            ClusterConfig::from_toml(&text, FILE).err(),
        ]
        .into_iter()
        .flatten()
        {
            names_the_file(&e, &text)?;
        }
    }
}

proptest! {
    #![proptest_config(crate::props::bounded(256))]

    /// A good machine config, damaged: read or refused with the file
    /// named, and what still reads prints back the same.
    #[test]
    fn damaged_machine_config(mutations in prop::collection::vec(mutation(), 1..4)) {
        let text = mutate(&worker(), &mutations);
        match MachineConfig::from_toml(&text, FILE) {
            Ok(c) => {
                let printed = c.to_toml();
                prop_assert!(printed.is_ok(), "{:?}", printed);
                let printed = printed.unwrap_or_default();
                match MachineConfig::from_toml(&printed, FILE) {
                    Ok(back) => prop_assert_eq!(back, c),
                    Err(e) => prop_assert!(false, "{} does not read back: {}", printed, e),
                }
            }
            Err(e) => names_the_file(&e, &text)?,
        }
    }

    /// The same for `cluster.toml`.
    #[test]
    fn damaged_cluster_config(mutations in prop::collection::vec(mutation(), 1..4)) {
        let text = mutate(CLUSTER, &mutations);
        match ClusterConfig::from_toml(&text, FILE) {
            Ok(c) => {
                let printed = toml::to_string(&c);
                prop_assert!(printed.is_ok(), "{:?}", printed);
                let printed = printed.unwrap_or_default();
                match ClusterConfig::from_toml(&printed, FILE) {
                    Ok(back) => prop_assert_eq!(back, c),
                    Err(e) => prop_assert!(false, "{} does not read back: {}", printed, e),
                }
            }
            Err(e) => names_the_file(&e, &text)?,
        }
    }
}
