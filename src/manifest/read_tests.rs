use super::*;
use crate::manifest::Artifact;

/// A whole manifest with one artifact `{kind: x, path, sha256, size: 1}`.
fn with_artifact(path: &str, sha256: &str) -> Vec<u8> {
    let m = Manifest::sample(vec![Artifact {
        kind: "x".into(),
        path: path.into(),
        sha256: sha256.into(),
        size: 1,
    }]);
    serde_json::to_vec(&m).unwrap()
}

#[test]
fn manifest_paths_stay_inside() {
    for (path, problem) in [
        ("../etc/passwd", "leaves the directory"),
        ("/etc/passwd", "is absolute"),
        ("", "is empty"),
    ] {
        match Manifest::parse(&with_artifact(path, &"0".repeat(64))) {
            Err(ManifestError::Field { field, problem: p }) => {
                assert_eq!(field, "artifacts[0].path");
                assert!(p.contains(problem), "{p}");
            }
            other => panic!("{path}: {other:?}"),
        }
    }
    let e = Manifest::parse(&with_artifact("a", "ABC")).unwrap_err();
    assert!(e
        .to_string()
        .starts_with("manifest.json field artifacts[0].sha256: "));
    let json = serde_json::json!({"schema": 2, "artifacts": []});
    let e = Manifest::parse(&serde_json::to_vec(&json).unwrap()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "manifest.json field schema: is 2, this nodeimg reads 1"
    );
}

#[test]
fn unknown_and_missing_fields_are_refused_by_name() {
    let mut v = serde_json::to_value(Manifest::sample(Vec::new())).unwrap();
    v["later_field"] = true.into();
    let e = Manifest::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    let cause = std::error::Error::source(&e).unwrap().to_string();
    assert!(cause.contains("later_field"), "{cause}");
    let json = serde_json::json!({"schema": 1, "artifacts": []});
    let e = Manifest::parse(&serde_json::to_vec(&json).unwrap()).unwrap_err();
    let cause = std::error::Error::source(&e).unwrap().to_string();
    assert!(cause.contains("missing field"), "{cause}");
}

#[test]
fn read_names_the_file_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let e = Manifest::read(dir.path()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("reading {}", dir.path().join(MANIFEST_FILE).display())
    );
    let m = Manifest::sample(Vec::new());
    std::fs::write(dir.path().join(MANIFEST_FILE), m.to_json().unwrap()).unwrap();
    assert_eq!(Manifest::read(dir.path()).unwrap(), m);
}
