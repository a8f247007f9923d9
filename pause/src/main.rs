//! `pause`: the process that holds a pod's namespaces open. It sleeps until
//! SIGTERM or SIGINT, reaps any child re-parented to it (it is PID 1 of the
//! pod), and exits 0. `pause probe` instead prints what the container runtime
//! left this process (uid, capabilities, seccomp, no_new_privs) and whether
//! `/` is writable: nodeagent's proof that containers are confined.
//! `pause listen PORT` answers every TCP connection with one line, and
//! `pause connect HOST:PORT [TRIES [WAIT]]` says whether it reached one
//! within TRIES tries (default 60, one every 4 s at most) after WAIT
//! seconds (default 0: a NetworkPolicy engine needs a moment to learn of
//! a new pod): the lab's proof that
//! pods reach each other and Services, and that NetworkPolicies stop them
//! (no other program is in the image). `pause resolve NAME [TRIES]` asks
//! the pod's name server (its resolv.conf) for NAME's IPv4 addresses: the
//! lab's proof that cluster DNS answers, and that policies let it through.

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("probe") => probe(),
        Some("listen") => listen(args.get(1).map(String::as_str).unwrap_or("8080")),
        Some("connect") => {
            let tries = args.get(2).and_then(|t| t.parse().ok()).unwrap_or(60);
            let wait = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(0);
            std::thread::sleep(std::time::Duration::from_secs(wait));
            let ok = connect(args.get(1).map(String::as_str).unwrap_or_default(), tries);
            std::process::exit(if ok { 0 } else { 1 });
        }
        Some("resolve") => {
            let tries = args.get(2).and_then(|t| t.parse().ok()).unwrap_or(60);
            let ok = resolve(args.get(1).map(String::as_str).unwrap_or_default(), tries);
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

/// The first `nameserver` of resolv.conf `text`.
fn name_server(text: &str) -> Option<std::net::IpAddr> {
    text.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        (words.next() == Some("nameserver"))
            .then(|| words.next()?.parse().ok())
            .flatten()
    })
}

/// The IPv4 addresses in `answer` to query `id`; `Err` says why none.
fn addresses(answer: &[u8], id: u16) -> Result<Vec<std::net::Ipv4Addr>, String> {
    let packet = simple_dns::Packet::parse(answer).map_err(|e| e.to_string())?;
    if packet.id() != id {
        return Err(format!("answer to query {}, not {id}", packet.id()));
    }
    let found: Vec<std::net::Ipv4Addr> = packet
        .answers
        .iter()
        .filter_map(|r| match &r.rdata {
            simple_dns::rdata::RData::A(a) => Some(std::net::Ipv4Addr::from(a.address)),
            _ => None,
        })
        .collect();
    if found.is_empty() {
        return Err(format!("no address ({:?})", packet.rcode()));
    }
    Ok(found)
}

/// Asks for `name`'s A records over UDP, one try every 4 s at most.
fn resolve(name: &str, tries: u32) -> bool {
    let server = match std::fs::read_to_string("/etc/resolv.conf")
        .ok()
        .and_then(|t| name_server(&t))
    {
        Some(s) => std::net::SocketAddr::new(s, 53),
        None => {
            println!("NODEIMG-RESOLVE {name} failed: no nameserver in /etc/resolv.conf");
            return false;
        }
    };
    let mut last = String::from("no try");
    for attempt in 0..tries {
        let id = u16::try_from(attempt % 65_000).unwrap_or(0) + 1;
        let mut query = simple_dns::Packet::new_query(id);
        query.set_flags(simple_dns::PacketFlag::RECURSION_DESIRED);
        let qname = match simple_dns::Name::new(name.trim_end_matches('.')) {
            Ok(n) => n,
            Err(e) => {
                println!("NODEIMG-RESOLVE {name} bad name: {e}");
                return false;
            }
        };
        query.questions.push(simple_dns::Question::new(
            qname,
            simple_dns::TYPE::A.into(),
            simple_dns::CLASS::IN.into(),
            false,
        ));
        let outcome = query
            .build_bytes_vec()
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                let socket = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
                socket
                    .set_read_timeout(Some(std::time::Duration::from_secs(3)))
                    .map_err(|e| e.to_string())?;
                socket.send_to(&bytes, server).map_err(|e| e.to_string())?;
                let mut buf = [0u8; 1500];
                let (n, _) = socket.recv_from(&mut buf).map_err(|e| e.to_string())?;
                addresses(buf.get(..n).unwrap_or_default(), id)
            });
        match outcome {
            Ok(found) => {
                let list: Vec<String> = found.iter().map(|a| a.to_string()).collect();
                println!("NODEIMG-RESOLVE {name} {}", list.join(","));
                return true;
            }
            Err(e) => last = e,
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    println!("NODEIMG-RESOLVE {name} failed via {server}: {last}");
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_first_nameserver_is_asked() {
        let conf = "search default.svc.cluster.local\nnameserver 10.96.0.10\nnameserver 1.1.1.1\n";
        assert_eq!(name_server(conf), Some("10.96.0.10".parse().unwrap()));
        assert_eq!(name_server("options ndots:5\n"), None);
    }

    #[test]
    fn answers_give_their_addresses_and_others_are_refused() {
        let mut reply = simple_dns::Packet::new_reply(9);
        reply.answers.push(simple_dns::ResourceRecord::new(
            simple_dns::Name::new_unchecked("kubernetes.default.svc.cluster.local"),
            simple_dns::CLASS::IN,
            30,
            simple_dns::rdata::RData::A(simple_dns::rdata::A {
                address: 0x0a60_0001,
            }),
        ));
        let bytes = reply.build_bytes_vec().unwrap();
        assert_eq!(
            addresses(&bytes, 9).unwrap(),
            ["10.96.0.1".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        assert!(addresses(&bytes, 8).unwrap_err().contains("not 8"));
        let empty = simple_dns::Packet::new_reply(9).build_bytes_vec().unwrap();
        assert!(addresses(&empty, 9).unwrap_err().contains("no address"));
    }
}
