//! The first run builds tract once: host board crates (and the probe, and the generic board)
//! are built in legionc's target dir with legionc's release profile and resolve tract's
//! dependencies with the features legionc's workspace gives them, so cargo finds tract built.

use std::path::Path;
use std::process::Command;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `[profile.release]` of a Cargo.toml, as written.
fn release_profile(toml: &str) -> String {
    let start = toml.find("[profile.release]").expect("a [profile.release] section");
    let rest = &toml[start..];
    let end = rest[1..].find("\n[").map_or(rest.len(), |i| i + 1);
    rest[..end].lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).map(|l| format!("{l}\n")).collect()
}

#[test]
fn generated_crates_build_with_legionc_s_release_profile() {
    let ws = std::fs::read_to_string(workspace().join("Cargo.toml")).unwrap();
    // `incremental` applies to local crates only: it does not key tract's build.
    let ours: String = release_profile(&ws).lines().filter(|l| !l.starts_with("incremental")).map(|l| format!("{l}\n")).collect();
    assert_eq!(ours, legionc::codegen::RELEASE_PROFILE, "the workspace's [profile.release] and the generated crates' differ");
    for f in legionc::codegen::render_probe().unwrap() {
        if f.path == Path::new("legion-probe/Cargo.toml") {
            assert_eq!(release_profile(std::str::from_utf8(&f.bytes).unwrap()), legionc::codegen::RELEASE_PROFILE);
        }
    }
}

/// Every package of tract-core's build with its features, as `cargo tree` resolves it for
/// the manifest.
fn tract_features(manifest: &Path) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let o = Command::new(cargo)
        .args(["tree", "--offline", "-p", "tract-core", "-e", "normal,build", "--prefix", "none", "-f", "{p} [{f}]", "--manifest-path"])
        .arg(manifest)
        .output()
        .unwrap();
    assert!(o.status.success(), "cargo tree: {}", String::from_utf8_lossy(&o.stderr));
    let mut lines: Vec<String> = String::from_utf8(o.stdout).unwrap().lines().map(|l| l.trim_end_matches(" (*)").to_string()).collect();
    lines.sort();
    lines.dedup();
    lines
}

#[test]
fn host_board_crates_resolve_tract_as_legionc_does() {
    let d = crate::TempDir::new("first-run");
    let files = legionc::codegen::render_probe().unwrap();
    legionc::codegen::write(&d.0, &files).unwrap();
    let ours = tract_features(&workspace().join("Cargo.toml"));
    let probe = tract_features(&d.0.join("legion-probe").join("Cargo.toml"));
    assert!(ours.iter().any(|l| l.starts_with("tract-linalg ")), "{ours:?}");
    let only = |a: &[String], b: &[String]| a.iter().filter(|l| !b.contains(l)).cloned().collect::<Vec<_>>();
    assert!(
        ours == probe,
        "tract's dependencies resolve differently in legionc's workspace and in a board crate (align the features in runtime-template/Cargo.toml):\n  legionc only: {:?}\n  board only: {:?}",
        only(&ours, &probe),
        only(&probe, &ours)
    );
}
