//! Property tests: the parser never panics on any line, and what the
//! printer writes the parser reads back unchanged. Bounded (1024 cases
//! each, well under a second) so they run in every `cargo test`; failures
//! are not persisted into the source tree.

use super::*;
use proptest::prelude::*;

/// Pieces a command line is made of, so random lines reach every key's
/// value checks rather than stopping at "unknown key".
fn fragment() -> impl Strategy<Value = String> {
    let keys = KEYS
        .iter()
        .map(|k| format!("{PREFIX}{k}="))
        .collect::<Vec<_>>();
    prop_oneof![
        proptest::sample::select(keys),
        Just(" ".to_string()),
        Just("\"".to_string()),
        Just("\t\n".to_string()),
        Just("nodeimg.".to_string()),
        Just("PARTUUID=".to_string()),
        Just("file:/".to_string()),
        Just("/dev/".to_string()),
        Just("..".to_string()),
        Just("=".to_string()),
        Just("https://h/c#sha256=".to_string()),
        "[0-9a-fA-F]{0,66}",
        "[0-9]{0,22}",
        "\\PC{0,8}",
        any::<String>(),
    ]
}

fn line() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..24).prop_map(|v| v.concat())
}

/// A kernel word as the parser hands it out: not empty, no `"`, not a
/// `nodeimg.*` key; it may hold whitespace (it was quoted).
fn kernel_word() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_=./, \t-]{1,16}".prop_filter("a word of its own", |w| {
        !w.trim().is_empty() && !w.starts_with(PREFIX)
    })
}

fn device() -> impl Strategy<Value = DeviceRef> {
    prop_oneof![
        "/dev/[a-z0-9][a-z0-9/ _-]{0,20}"
            .prop_filter("no ..", |p| !p.contains("/../") && !p.ends_with("/.."))
            .prop_map(|p| DeviceRef::Path(p.into())),
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
            .prop_map(DeviceRef::PartUuid),
    ]
}

fn image_device() -> impl Strategy<Value = DeviceRef> {
    prop_oneof![
        device(),
        "(/[a-z0-9_][a-z0-9_.-]{0,8}){1,4}"
            .prop_filter("plain path", |p| {
                p.split('/').skip(1).all(|c| c != "." && c != "..")
                    && !["/dev/", "/proc/", "/sys/", "/run/"]
                        .iter()
                        .any(|api| p.starts_with(api))
            })
            .prop_map(|p| DeviceRef::File(p.into())),
    ]
}

fn config_url() -> impl Strategy<Value = ConfigUrl> {
    (
        any::<bool>(),
        "[a-z][a-z0-9-]{0,10}(\\.[a-z0-9]{1,5}){0,2}",
        proptest::option::of(1u16..),
        "(/[a-zA-Z0-9._~-]{0,8}){1,3}",
        "[0-9a-f]{64}",
    )
        .prop_filter_map("a URL the parser takes", |(tls, host, port, path, hash)| {
            let scheme = if tls { "https" } else { "http" };
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            ConfigUrl::parse(&format!("{scheme}://{host}{port}{path}#sha256={hash}")).ok()
        })
}

fn test_kill() -> impl Strategy<Value = TestKill> {
    ("[a-z0-9-]{1,12}", any::<bool>()).prop_map(|(service, always)| TestKill { service, always })
}

fn action() -> impl Strategy<Value = FailureAction> {
    prop_oneof![
        Just(FailureAction::PowerOff),
        Just(FailureAction::Reboot),
        Just(FailureAction::Hang),
    ]
}

/// Every key, each present or not, each value one the parser accepts.
fn args() -> impl Strategy<Value = Args> {
    use proptest::option::of;
    (
        (
            of("[0-9a-f]{64}"),
            of(of("([0-9a-f]{2}){1,32}")),
            of(1..=u64::MAX / 8),
            of(any::<u64>()),
            of(prop_oneof![Just(RootFs::Squashfs), Just(RootFs::Erofs)]),
            of(image_device()),
            of(image_device()),
            of(prop_oneof![
                Just(StateRef::Auto),
                device().prop_map(StateRef::Device)
            ]),
        ),
        (
            of(prop_oneof![Just(VerityMode::Lazy), Just(VerityMode::Full)]),
            of(action()),
            of(0..=MAX_FAILURE_DELAY_SECS),
            of(prop_oneof![Just(Health::Ok), Just(Health::Fail)]),
            of(test_kill()),
            of(config_url()),
            of(30..=365 * 86_400u64),
        ),
    )
        .prop_map(
            |(
                (root_hash, salt, data_blocks, hash_start, fstype, root, hash, state),
                (verity, on_failure, failure_delay, health, test_kill, config_url, lifetime),
            )| Args {
                root_hash,
                salt,
                data_blocks,
                hash_start,
                fstype,
                root,
                hash,
                state,
                verity,
                on_failure,
                failure_delay,
                health,
                test_kill,
                config_url,
                test_cert_lifetime: lifetime,
            },
        )
}

proptest! {
    #![proptest_config(crate::props::bounded(1024))]

    /// Any text: a typed result, never a panic; and the failure policy is
    /// read from every line, good or bad.
    #[test]
    fn any_line_parses_or_is_refused(raw in line()) {
        let _ = failure_policy(&raw);
        if let Ok(line) = KernelCmdline::parse(&raw) {
            let _ = line.nodeimg.complete();
            // what was read prints back to a line that reads the same
            let again = KernelCmdline::parse(&line.to_string());
            prop_assert_eq!(again, Ok(line));
        }
    }

    /// Arbitrary Unicode, not just the fragments above.
    #[test]
    fn any_string_parses_or_is_refused(raw in any::<String>()) {
        let _ = failure_policy(&raw);
        let _ = Cmdline::parse(&raw);
    }

    /// The builder's side: every key the printer writes, among the
    /// kernel's own words, the parser reads back as it was.
    #[test]
    fn printed_line_reads_back(
        kernel in prop::collection::vec(kernel_word(), 0..6),
        nodeimg in args(),
    ) {
        let line = KernelCmdline { kernel, nodeimg };
        let printed = line.to_string();
        prop_assert_eq!(KernelCmdline::parse(&printed), Ok(line), "{}", printed);
    }

    /// What the agent boots with prints to a line that boots the same.
    #[test]
    fn complete_cmdline_reads_back(nodeimg in args()) {
        if let Ok(c) = nodeimg.complete() {
            prop_assert_eq!(Cmdline::parse(&c.to_string()), Ok(c));
        }
    }
}

/// Found by `any_line_parses_or_is_refused`: a quoted kernel word whose
/// key holds a space (`"\" nodeimg.roothash="`) printed with only its
/// value quoted, and read back as a `nodeimg.*` key.
#[test]
fn kernel_word_with_a_spaced_key_prints_back_as_one_word() {
    let line = KernelCmdline::parse("\" nodeimg.roothash=").unwrap();
    assert_eq!(line.kernel, [" nodeimg.roothash="]);
    assert_eq!(line.to_string(), "\" nodeimg.roothash=\"");
    assert_eq!(KernelCmdline::parse(&line.to_string()), Ok(line));
}
