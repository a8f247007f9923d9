//! The service supervisor of stage 2: the daemons the image's layers
//! declare (`/usr/lib/nodeimg/services.json`), started in dependency order,
//! each in its own cgroup v2 group, as its own user, with a reduced
//! capability bounding set and no_new_privs, logged to
//! `/var/log/nodeimg/<service>.log`, restarted with capped exponential
//! backoff, and stopped in reverse order at shutdown. The decisions live in
//! [`supervisor`] (pure, tested with a fake launcher); [`launch`] carries
//! them out. Nothing here decides the boot's outcome: `main.rs` does.

pub mod caps;
pub mod launch;
pub mod logfile;
pub mod mailbox;
pub mod run;
pub mod supervisor;
pub mod users;

use contract::services::ServiceSpec;

/// The services file the builder writes into the image.
pub const SERVICES_FILE: &str = "/usr/lib/nodeimg/services.json";

/// The image's services; none when the file is absent (an image without any).
pub fn load(path: &std::path::Path) -> Result<Vec<ServiceSpec>, String> {
    match std::fs::read(path) {
        Ok(data) => serde_json::from_slice(&data).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}
