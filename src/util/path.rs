//! Tree paths: the one spelling of a path inside an image (relative, `/`-
//! separated, no `.` or `..`), shared by the specs, the package unpacker,
//! the root tree and the lab.

/// Normalises an archive or spec path into tree form: strips a leading `./`
/// or `/`, drops empty and `.` components. Returns `None` when a `..`
/// component appears (the caller reports it as an escape attempt).
pub fn normalize(path: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => return None,
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_rejects_dotdot() {
        assert_eq!(normalize("./usr//bin/./x").as_deref(), Some("usr/bin/x"));
        assert_eq!(normalize("/etc/"), Some("etc".to_string()));
        assert_eq!(normalize("usr/../../x"), None);
    }
}
