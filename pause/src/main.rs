//! `pause`: the process that holds a pod's namespaces open. It sleeps until
//! SIGTERM or SIGINT, reaps any child re-parented to it (it is PID 1 of the
//! pod), and exits 0. `pause probe` instead prints what the container runtime
//! left this process (uid, capabilities, seccomp, no_new_privs) and whether
//! `/` is writable: nodeagent's proof that containers are confined.
//! `pause listen PORT` answers every TCP connection with one line, and
//! `pause connect HOST:PORT [TRIES]` says whether it reached one within
//! TRIES tries (default 60, one every 4 s at most): the lab's proof that
//! pods reach each other and Services, and that NetworkPolicies stop them
//! (no other program is in the image).

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("probe") => probe(),
        Some("listen") => listen(args.get(1).map(String::as_str).unwrap_or("8080")),
        Some("connect") => {
            let tries = args.get(2).and_then(|t| t.parse().ok()).unwrap_or(60);
            let ok = connect(args.get(1).map(String::as_str).unwrap_or_default(), tries);
            std::process::exit(if ok { 0 } else { 1 });
        }
        Some("--version") => println!("pause {}", env!("CARGO_PKG_VERSION")),
        _ => pause(),
    }
}

fn pause() {
    // SAFETY: sigset_t is a plain bit array (zeroed is a valid empty set);
    // the calls below only read and write that local set and our own mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGCHLD] {
            libc::sigaddset(&mut set, s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is initialised and `sig` is a valid out pointer.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            continue;
        }
        if sig == libc::SIGCHLD {
            // SAFETY: waitpid with a null status pointer is allowed.
            while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
            continue;
        }
        return; // SIGTERM or SIGINT: exit 0
    }
}

/// One line of `key=value` pairs, read by nodeagent.
fn probe() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| "?".into())
    };
    let uid = field("Uid:")
        .split_whitespace()
        .nth(1)
        .unwrap_or("?")
        .to_string();
    let root_writable = std::fs::write("/nodeimg-probe", b"x").is_ok();
    let line = format!(
        "NODEIMG-PROBE uid={uid} capeff={} capbnd={} seccomp={} nonewprivs={} root_writable={root_writable}\n",
        field("CapEff:"),
        field("CapBnd:"),
        field("Seccomp:"),
        field("NoNewPrivs:"),
    );
    let _ = std::io::stdout().write_all(line.as_bytes());
}

fn listen(port: &str) {
    let listener = match std::net::TcpListener::bind(format!("0.0.0.0:{port}")) {
        Ok(l) => l,
        Err(e) => {
            println!("NODEIMG-LISTEN {port} failed: {e}");
            std::process::exit(1);
        }
    };
    println!("NODEIMG-LISTEN {port}");
    for mut conn in listener.incoming().flatten() {
        let _ = conn.write_all(b"nodeimg pause\n");
    }
}

/// Up to 60 tries a second apart (a new pod's network, a Service's rules
/// may lag its start); prints the outcome.
fn connect(target: &str, tries: u32) -> bool {
    use std::net::ToSocketAddrs;
    let timeout = std::time::Duration::from_secs(3);
    let mut last = String::from("no address");
    for _ in 0..tries {
        let addrs: Vec<std::net::SocketAddr> = match target.to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => {
                println!("NODEIMG-CONNECT {target} bad address: {e}");
                return false;
            }
        };
        for a in &addrs {
            match std::net::TcpStream::connect_timeout(a, timeout) {
                Ok(_) => {
                    println!("NODEIMG-CONNECT {target} ok");
                    return true;
                }
                Err(e) => last = e.to_string(),
            }
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    println!("NODEIMG-CONNECT {target} failed: {last}");
    false
}
