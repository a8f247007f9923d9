//! `nodeimg keys gen --out KEYDIR`: the manifest signing pair
//! (`signing.key`, `signing.pub`, cosign's formats) and the Secure Boot set
//! (`pk`, `kek`, `db`: RSA-2048 `.key` + self-signed `.crt`). Prints the
//! files it wrote. Existing keys are never replaced without `--force`.
//!
//! The password for `signing.key` comes from `NODEIMG_KEY_PASSWORD`, else
//! `COSIGN_PASSWORD` (cosign's variable, so one setting serves both tools).
//! It may be empty (cosign's default), but it must be set: an unprotected
//! key is a choice, not an accident. Secure Boot keys are unencrypted PEM
//! (what sbsign reads), protected by mode 0600.
//!
//! `nodeimg keys sign-efi --keydir KEYDIR IN OUT` signs one EFI binary
//! (systemd-boot, a UKI) with KEYDIR's db key, natively (Authenticode,
//! what `sbsign` would write). `nodeimg keys enroll-ovmf KEYDIR --out
//! VARS.fd` writes an OVMF variable store with KEYDIR's PK, KEK and db
//! enrolled and Secure Boot on (runs `virt-fw-vars`; see
//! `firmware/README.md`).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nodeimg::lab::secure_boot;
use nodeimg::sign::authenticode::PeSigner;
use nodeimg::sign::keys::{
    self, generate_secure_boot, generate_signing_pair, KeyError, KeyFormatError, SecureBootOptions,
    SigningKey,
};
use zeroize::Zeroizing;

/// Where the key password is looked for, in order.
pub const PASSWORD_VARS: [&str; 2] = ["NODEIMG_KEY_PASSWORD", "COSIGN_PASSWORD"];

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create signing.key/signing.pub and the Secure Boot PK, KEK and db in KEYDIR.
    Gen(GenArgs),
    /// Sign an EFI binary (systemd-boot, a UKI) with KEYDIR's db key (Authenticode).
    SignEfi(SignEfiArgs),
    /// Write an OVMF variable store with KEYDIR's PK, KEK and db enrolled, Secure Boot on.
    EnrollOvmf(EnrollOvmfArgs),
}

#[derive(Debug, clap::Args)]
pub struct SignEfiArgs {
    /// Key directory holding db.key and db.crt (`nodeimg keys gen`).
    #[arg(long, value_name = "KEYDIR")]
    pub keydir: PathBuf,
    /// The EFI binary to sign (a signature already on it is replaced).
    #[arg(value_name = "IN")]
    pub input: PathBuf,
    /// Where the signed binary goes (may be IN itself).
    #[arg(value_name = "OUT")]
    pub output: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct EnrollOvmfArgs {
    /// Key directory holding pk.crt, kek.crt and db.crt (`nodeimg keys gen`).
    #[arg(value_name = "KEYDIR")]
    pub keydir: PathBuf,
    /// The variable store to write.
    #[arg(long, value_name = "VARS.fd")]
    pub out: PathBuf,
    /// The empty variable store to start from (Debian's ovmf package).
    #[arg(long, default_value = secure_boot::DEFAULT_VARS_TEMPLATE)]
    pub template: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// Directory for the key files (created with mode 0700 when missing).
    #[arg(long, value_name = "KEYDIR")]
    pub out: PathBuf,
    /// Only the manifest signing pair, no Secure Boot keys.
    #[arg(long)]
    pub signing_only: bool,
    /// Replace existing key files.
    #[arg(long)]
    pub force: bool,
    /// Owner named in the Secure Boot certificates' subjects.
    #[arg(long, default_value = "nodeimg")]
    pub owner: String,
    /// Validity of the Secure Boot certificates, in days from now.
    #[arg(long, default_value_t = 3650)]
    pub valid_days: u32,
}

pub fn run(args: KeysArgs) -> anyhow::Result<i32> {
    match args.command {
        KeysCommand::Gen(a) => gen(a),
        KeysCommand::SignEfi(a) => sign_efi(a),
        KeysCommand::EnrollOvmf(a) => enroll_ovmf(a),
    }
}

fn sign_efi(args: SignEfiArgs) -> anyhow::Result<i32> {
    let signer = PeSigner::from_keydir(&args.keydir)?;
    let input =
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let signed = signer
        .sign(&input)
        .with_context(|| format!("signing {}", args.input.display()))?;
    nodeimg::util::atomic::write(&args.output, &signed)
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!("{}", args.output.display());
    Ok(0)
}

fn enroll_ovmf(args: EnrollOvmfArgs) -> anyhow::Result<i32> {
    let tool = secure_boot::find_virt_fw_vars_from_env()?;
    secure_boot::enroll_ovmf_vars(&tool, &args.keydir, &args.template, &args.out)
        .with_context(|| format!("enrolling the keys of {}", args.keydir.display()))?;
    println!("{}", args.out.display());
    Ok(0)
}

fn gen(args: GenArgs) -> anyhow::Result<i32> {
    let (_, password) = password_from_env().with_context(|| {
        format!(
            "set {} (or {}) to the password for {} (it may be empty)",
            PASSWORD_VARS[0],
            PASSWORD_VARS[1],
            keys::SIGNING_KEY_FILE
        )
    })?;
    if !args.out.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?;
    }
    let mut written: Vec<PathBuf> = Vec::new();
    if !args.force {
        // Check every file first: refuse before writing anything.
        let mut all = vec![
            args.out.join(keys::SIGNING_KEY_FILE),
            args.out.join(keys::SIGNING_PUB_FILE),
        ];
        if !args.signing_only {
            for (name, _) in keys::SECURE_BOOT_KEYS {
                all.push(args.out.join(format!("{name}.key")));
                all.push(args.out.join(format!("{name}.crt")));
            }
        }
        keys::ensure_absent(&all).context("use --force to replace existing keys")?;
    }
    written.extend(generate_signing_pair(&args.out, &password, args.force)?);
    if !args.signing_only {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("the system clock is before 1970")?
            .as_secs();
        let opts = SecureBootOptions {
            owner: args.owner.clone(),
            not_before: i64::try_from(now).context("the system clock is out of range")?,
            valid_days: args.valid_days,
        };
        written.extend(generate_secure_boot(&args.out, &opts, args.force)?);
    }
    for p in &written {
        println!("{}", p.display());
    }
    Ok(0)
}

/// The key password: `NODEIMG_KEY_PASSWORD`, else `COSIGN_PASSWORD`, with
/// the variable it came from; `None` when neither is set.
pub fn password_from_env() -> Option<(&'static str, Zeroizing<Vec<u8>>)> {
    PASSWORD_VARS.iter().find_map(|var| {
        std::env::var_os(var).map(|v: OsString| (*var, Zeroizing::new(v.into_vec())))
    })
}

/// Loads a signing key for `nodeimg sign` (and the build): the password
/// from the environment, else the empty password (cosign's default). A
/// wrong password says which variables were consulted.
pub fn load_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let found = password_from_env();
    let password: &[u8] = found.as_ref().map(|(_, p)| p.as_slice()).unwrap_or(b"");
    match SigningKey::load(path, password) {
        Ok(k) => Ok(k),
        Err(
            e @ KeyError::Format {
                source: KeyFormatError::Decrypt,
                ..
            },
        ) => {
            let hint = match &found {
                Some((var, _)) => format!("the password in {var} does not open it"),
                None => format!(
                    "it is encrypted: set {} (or {}) to its password",
                    PASSWORD_VARS[0], PASSWORD_VARS[1]
                ),
            };
            Err(anyhow::Error::new(e).context(format!("{}: {hint}", path.display())))
        }
        Err(e) => Err(e.into()),
    }
}
