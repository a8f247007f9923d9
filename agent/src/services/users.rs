//! User and group names of a service, resolved against the image's own
//! `/etc/passwd` and `/etc/group` (the layers write them; there is no NSS).

use std::path::Path;

/// `(uid, gid)` for a service: root when no user is named; the user's
/// primary group unless `group` names another. Numbers are taken as they are.
pub fn resolve(etc: &Path, user: Option<&str>, group: Option<&str>) -> Result<(u32, u32), String> {
    let read = |name: &str| {
        std::fs::read_to_string(etc.join(name))
            .map_err(|e| format!("{}: {e}", etc.join(name).display()))
    };
    let (uid, primary) = match user {
        None => (0, 0),
        Some(u) => match u.parse::<u32>() {
            Ok(n) => (n, n),
            Err(_) => lookup_user(&read("passwd")?, u)
                .ok_or_else(|| format!("user {u:?} is not in the image's /etc/passwd"))?,
        },
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup_group(&read("group")?, g)
                .ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

/// `name:x:uid:gid:...` lines.
fn lookup_user(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        if f.next()? != name {
            return None;
        }
        let _password = f.next()?;
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}

/// `name:x:gid:members` lines.
fn lookup_group(group: &str, name: &str) -> Option<u32> {
    group.lines().find_map(|l| {
        let mut f = l.split(':');
        if f.next()? != name {
            return None;
        }
        let _password = f.next()?;
        f.next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("passwd"),
            "root:x:0:0:root:/root:/nonexistent\netcd:x:998:997::/var/lib/etcd:/nonexistent\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("group"),
            "root:x:0:\netcd:x:997:\nlogs:x:42:\n",
        )
        .unwrap();
        let etc = dir.path();
        assert_eq!(resolve(etc, None, None), Ok((0, 0)));
        assert_eq!(resolve(etc, Some("etcd"), None), Ok((998, 997)));
        assert_eq!(resolve(etc, Some("etcd"), Some("logs")), Ok((998, 42)));
        assert_eq!(
            resolve(etc, Some("65534"), Some("65534")),
            Ok((65534, 65534))
        );
        let e = resolve(etc, Some("ghost"), None).unwrap_err();
        assert!(e.contains("\"ghost\"") && e.contains("/etc/passwd"), "{e}");
        assert!(resolve(etc, None, Some("nogroup")).is_err());
    }
}
