//! Board crates from Tera templates: one standalone crate per board with the plan hard-coded,
//! the legion-runtime sources copied in and the model weights the board needs. Pure: returns
//! the files; `write` puts them on disk.

use crate::embedded;
use crate::fleet::Fleet;
use crate::model::LoadedModel;
use anyhow::{bail, Context, Result};
use legion_runtime::modelfile;
use legion_runtime::plan::{hex, Plan};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The release profile of every generated crate: legionc's own (the workspace's
/// `[profile.release]`, checked by a test), so that a host crate built in legionc's target dir
/// shares legionc's build of tract (cargo keys a crate's build by its profile, too). All but
/// `incremental`, which cargo applies to local crates only (it keys no build of tract) and
/// which would build a board's own code in many small codegen units.
pub const RELEASE_PROFILE: &str = "[profile.release]\ndebug = false\n";

/// The templates, by their names in `runtime-template/templates/`.
pub const TEMPLATES: &[&str] = &["Cargo.toml.tera", "main.rs.tera", "plan.rs.tera"];

/// The lock file every board crate starts from, so that board crates build with the versions
/// legionc was tested with.
const CARGO_LOCK: &[u8] = include_bytes!("../Cargo.lock");

/// A file to write, relative to the output directory.
pub struct OutFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

#[derive(Serialize)]
struct PeerCtx {
    name: String,
    addr: String,
    bandwidth_mbps: String,
    latency_ms: String,
    threads: usize,
    speed: String,
}

fn tera() -> Result<tera::Tera> {
    let mut t = tera::Tera::default();
    for name in TEMPLATES {
        let src = embedded::file(&format!("runtime-template/templates/{name}")).with_context(|| format!("template {name} is not embedded"))?;
        t.add_raw_template(name, std::str::from_utf8(src)?).with_context(|| format!("template {name}"))?;
    }
    t.autoescape_on(vec![]);
    Ok(t)
}


/// Board `index`'s runtime configuration for `plan`: compiled into its crate as constants, or
/// read from JSON by the generic board binary.
pub fn board_config(fleet: &Fleet, plan: &Plan, index: usize, model_file_sha256: &str) -> legion_runtime::board::BoardConfig {
    use legion_runtime::board::BoardConfig;
    let b = &fleet.boards[index];
    let deployment = fleet.deployment();
    BoardConfig {
        board: b.name.clone(),
        index,
        plan: fleet.deployed(plan),
        peers: deployment.boards,
        coordinator: deployment.coordinator,
        speed: b.speed(),
        threads: b.threads,
        cores: b.cores(),
        model_sha256: model_file_sha256.into(),
        deadline_ms: deployment.deadline_ms,
        heartbeat_ms: deployment.heartbeat_ms,
    }
}

/// The plan of a compiled fleet (`OUT/plan.json`).
pub fn compiled_plan(fleet: &Fleet) -> Result<Plan> {
    let p = fleet.out().join("plan.json");
    let bytes = std::fs::read(&p).with_context(|| format!("{} is not compiled: no {} (run `legionc compile` first)", fleet.name, p.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("reading {}", p.display()))
}

/// A plan from a JSON file (one that `bench` or `suite` wrote for a strategy), checked to be
/// for the fleet's boards and model.
pub fn plan_for(fleet: &Fleet, model: &LoadedModel, path: &Path) -> Result<Plan> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let plan: Plan = serde_json::from_slice(&bytes).with_context(|| format!("{}: not a plan", path.display()))?;
    let names: Vec<&String> = fleet.boards.iter().map(|b| &b.name).collect();
    if plan.boards.iter().collect::<Vec<_>>() != names {
        bail!("{}: a plan for boards {:?}, the fleet has {:?}", path.display(), plan.boards, names);
    }
    if plan.model_sha256 != model.sha256 {
        bail!("{}: a plan for another model (sha256 {}); {} has {}", path.display(), plan.model_sha256, fleet.model.source, model.sha256);
    }
    Ok(plan)
}

/// Every file of the compiled fleet: `plan.json` and one crate per board.
pub fn render(fleet: &Fleet, model: &LoadedModel, plan: &Plan) -> Result<Vec<OutFile>> {
    let tera = tera()?;
    let runtime = runtime_dir();
    let mut files = vec![OutFile { path: "plan.json".into(), bytes: [serde_json::to_vec_pretty(&fleet.deployed(plan))?, b"\n".to_vec()].concat() }];
    for (fi, b) in fleet.boards.iter().enumerate() {
        // A board runs its lane's plan (the whole plan when it has no lanes), among its lane's
        // boards.
        let (lane, plan, i) = fleet.board_lane(plan, fi)?;
        let plan = &plan;
        let plan_hash = plan.hash();
        let dir = PathBuf::from(b.slug());
        let coordinator = i == lane.coordinator;
        let model_file = modelfile::write(&plan.board_model((*model.ir).clone(), i), &|id| plan.board_needs(i, coordinator, id));
        // The same configuration the generic board reads from JSON, rendered as constants.
        let cfg = board_config(&lane, plan, i, &hex(&Sha256::digest(&model_file)));
        let peers: Vec<PeerCtx> = cfg
            .peers
            .iter()
            .map(|p| PeerCtx {
                name: p.name.clone(),
                addr: p.addr.clone(),
                bandwidth_mbps: format!("{:?}", p.link.bandwidth_mbps),
                latency_ms: format!("{:?}", p.link.latency_ms),
                threads: p.threads,
                speed: p.speed.map_or("None".into(), |s| format!("Some({s:?})")),
            })
            .collect();
        let mut cx = tera::Context::new();
        cx.insert("legionc_version", env!("CARGO_PKG_VERSION"));
        cx.insert("board", &b.name);
        cx.insert("slug", &b.slug());
        cx.insert("fleet", &fleet.name);
        cx.insert("fleet_slug", &crate::fleet::slug(&fleet.name));
        cx.insert("plan", plan);
        cx.insert("plan_hash", &plan_hash);
        cx.insert("index", &cfg.index);
        cx.insert("coordinator", &cfg.coordinator);
        cx.insert("speed", &cfg.speed.map_or("None".into(), |s| format!("Some({s:?})")));
        cx.insert("threads", &cfg.threads);
        cx.insert("cores", &cfg.cores);
        cx.insert("deadline_ms", &cfg.deadline_ms);
        cx.insert("heartbeat_ms", &cfg.heartbeat_ms.map_or("None".into(), |ms| format!("Some({ms})")));
        cx.insert("model_file_sha256", &cfg.model_sha256);
        cx.insert("peers", &peers);
        cx.insert("runtime_dir", &runtime);
        cx.insert("release_profile", RELEASE_PROFILE);
        for (template, path) in [("Cargo.toml.tera", "Cargo.toml"), ("main.rs.tera", "src/main.rs"), ("plan.rs.tera", "src/plan.rs")] {
            let text = tera.render(template, &cx).with_context(|| format!("rendering {template} for board {}", b.name))?;
            files.push(OutFile { path: dir.join(path), bytes: text.into_bytes() });
        }
        for (rel, bytes) in embedded::dir("runtime-template") {
            if rel.starts_with("templates/") {
                continue;
            }
            files.push(OutFile { path: dir.join(&runtime).join(rel), bytes: bytes.to_vec() });
        }
        files.push(OutFile { path: dir.join("Cargo.lock"), bytes: CARGO_LOCK.to_vec() });
        files.push(OutFile { path: dir.join("model.bin"), bytes: model_file });
    }
    Ok(files)
}

/// The probe's crate (`legion-probe/`, generated into the shared target dir): legion-runtime
/// and a `main` that calls its probe. The same for every fleet, so one copy per target dir is
/// built once per triple.
pub fn render_probe() -> Result<Vec<OutFile>> {
    Ok(shared_crate(
        "legion-probe",
        "",
        b"//! Generated by legionc; do not edit. The probe legionc runs on every board.\n\n/// Counting its allocations, the probe measures what each job needs.\n#[global_allocator]\nstatic ALLOC: legion_runtime::mem::Counting = legion_runtime::mem::Counting;\n\nfn main() -> std::process::ExitCode {\n    legion_runtime::probe::main()\n}\n",
    ))
}

/// The generic board's crate (`legion-board/`, generated into the shared target dir): the
/// runtime with its fleet and plan read from a JSON file at start, so that benchmarks run any
/// emulated fleet and plan with one build.
pub fn render_generic_board() -> Result<Vec<OutFile>> {
    let main = embedded::file("runtime-template/templates/generic-board.rs").context("generic-board.rs is not embedded")?;
    Ok(shared_crate("legion-board", "anyhow = \"1\"\nserde_json = \"1\"\n", main))
}

/// A crate shared by every fleet of a target dir: a binary `name` from `main` on
/// legion-runtime (copied in) and the pinned lock file.
fn shared_crate(name: &str, extra_deps: &str, main: &[u8]) -> Vec<OutFile> {
    let dir = PathBuf::from(name);
    let runtime = runtime_dir();
    let mut files = vec![
        OutFile {
            path: dir.join("Cargo.toml"),
            bytes: format!(
                "# Generated by legionc {}; do not edit.\n\n[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n[[bin]]\nname = \"{name}\"\npath = \"src/main.rs\"\n\n[dependencies]\nlegion-runtime = {{ path = \"{runtime}\" }}\n{extra_deps}\n[workspace]\n\n{RELEASE_PROFILE}",
                env!("CARGO_PKG_VERSION")
            )
            .into_bytes(),
        },
        OutFile { path: dir.join("src/main.rs"), bytes: main.to_vec() },
    ];
    for (rel, bytes) in embedded::dir("runtime-template") {
        if !rel.starts_with("templates/") {
            files.push(OutFile { path: dir.join(&runtime).join(rel), bytes: bytes.to_vec() });
        }
    }
    files.push(OutFile { path: dir.join("Cargo.lock"), bytes: CARGO_LOCK.to_vec() });
    files
}

/// The folder of legion-runtime's copy in every generated crate: `legion-runtime-<hash>`, the
/// hash of its sources. Generated crates sharing a target dir share the compiled runtime
/// (cargo keys a path dependency by its relative path), so copies of different sources must
/// not have the same folder name, and copies of the same sources are then built once.
pub fn runtime_dir() -> String {
    let mut h = Sha256::new();
    for (rel, bytes) in embedded::dir("runtime-template").filter(|(rel, _)| !rel.starts_with("templates/")) {
        h.update(rel.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    format!("legion-runtime-{}", &hex(&h.finalize())[..12])
}

/// The probe's identity in profile records: sha256 of its crate's sources and the triple it
/// is built for. The binary is a function of these (with the pinned lock file), and hashing
/// the sources lets a warm compile find its records without building the probe.
///
/// Of the lock file, only the packages legion-runtime depends on count: a dependency added to
/// legionc alone does not change the probe, so it does not invalidate the boards' profiles.
pub fn probe_sha256(triple: &str) -> Result<String> {
    let mut h = Sha256::new();
    for f in render_probe()? {
        let bytes = if f.path.ends_with("Cargo.lock") { lock_closure(std::str::from_utf8(&f.bytes)?, "legion-runtime")?.into_bytes() } else { f.bytes };
        h.update(f.path.to_string_lossy().as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    h.update(triple.as_bytes());
    Ok(hex(&h.finalize()))
}

/// The packages of a Cargo.lock that `root` depends on, itself included (what a build of
/// `root` can use), one line each: name, version, source and checksum, sorted.
pub fn lock_closure(lock: &str, root: &str) -> Result<String> {
    let lock: cargo_lock::Lockfile = lock.parse().context("parsing Cargo.lock")?;
    let pkgs = &lock.packages;
    let mut keep = vec![false; pkgs.len()];
    let mut todo: Vec<usize> = pkgs.iter().enumerate().filter(|(_, p)| p.name.as_str() == root).map(|(i, _)| i).collect();
    while let Some(i) = todo.pop() {
        if std::mem::replace(&mut keep[i], true) {
            continue;
        }
        for dep in &pkgs[i].dependencies {
            todo.extend(pkgs.iter().enumerate().filter(|(j, p)| !keep[*j] && p.name == dep.name && p.version == dep.version).map(|(j, _)| j));
        }
    }
    let mut lines: Vec<String> = pkgs
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(p, _)| format!("{} {} {} {}\n", p.name, p.version, p.source.as_ref().map(|s| s.to_string()).unwrap_or_default(), p.checksum.as_ref().map(|c| c.to_string()).unwrap_or_default()))
        .collect();
    lines.sort();
    Ok(lines.concat())
}

/// The modification time of every file of a legion-runtime copy. Cargo decides whether a
/// built crate is fresh by its sources' mtimes; a copy written now would make it rebuild the
/// runtime for every board crate, although they all share one build of it (same relative path,
/// same profile). The copy's folder name is the hash of its sources, so a fixed past date is
/// honest: different sources are a different folder, hence a different package for cargo.
pub fn runtime_mtime() -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000)
}

/// Write the files under `out`. Each board's crate and `plan.json` are replaced whole: written
/// into a staging folder, then renamed into place, so a failure leaves the previous version.
/// Other content of `out` (the shared build folder, run state) is kept.
pub fn write(out: &Path, files: &[OutFile]) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // Removed on every return, also after an error.
    let staging_dir = tempfile::Builder::new().prefix(".staging-").tempdir_in(out).with_context(|| format!("creating a staging folder in {}", out.display()))?;
    let staging = staging_dir.path();
    let runtime = runtime_dir();
    for f in files {
        let p = staging.join(&f.path);
        std::fs::create_dir_all(p.parent().unwrap())?;
        std::fs::write(&p, &f.bytes).with_context(|| format!("writing {}", p.display()))?;
        if f.path.components().any(|c| c.as_os_str() == runtime.as_str()) {
            std::fs::File::options()
                .write(true)
                .open(&p)
                .and_then(|file| file.set_modified(runtime_mtime()))
                .with_context(|| format!("dating {}", p.display()))?;
        }
    }
    let tops: BTreeSet<PathBuf> = files.iter().map(|f| f.path.components().next().unwrap().as_os_str().into()).collect();
    for top in tops {
        let dst = out.join(&top);
        // Keep the build output of a board crate (cargo rewrites its lock file only).
        if dst.is_dir() {
            std::fs::remove_dir_all(&dst).with_context(|| format!("replacing {}", dst.display()))?;
        } else if dst.exists() {
            std::fs::remove_file(&dst)?;
        }
        std::fs::rename(staging.join(&top), &dst).with_context(|| format!("moving {} into place", dst.display()))?;
    }
    Ok(())
}

/// Paths that differ between `files` and what is on disk under `out` (for `--check`). A board's
/// `Cargo.lock` is seeded from legionc's and pruned by cargo when the crate builds: only its
/// presence is checked.
pub fn stale(out: &Path, files: &[OutFile]) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|f| {
            let on_disk = std::fs::read(out.join(&f.path));
            if f.path.ends_with("Cargo.lock") {
                return on_disk.is_err();
            }
            on_disk.map(|b| b != f.bytes).unwrap_or(true)
        })
        .map(|f| f.path.clone())
        .collect()
}

/// Refuse an output directory that would clobber something that is not a compiled fleet.
pub fn check_out_dir(out: &Path) -> Result<()> {
    if out.is_file() {
        bail!("output {} is a file", out.display());
    }
    // What legionc itself puts there before a plan exists (profiling builds the probe first).
    // (`.probe`: where earlier builds of legionc kept the probe's scratch files.)
    const OWN: &[&str] = &["probe", ".probe", "target", "build.log", "fleet.key", ".lock"];
    let own = |name: &str| OWN.contains(&name) || name.starts_with(".staging-") || name.starts_with(".probe-");
    let foreign = out.is_dir() && std::fs::read_dir(out)?.filter_map(|e| e.ok()).any(|e| !own(&e.file_name().to_string_lossy()));
    if foreign && !out.join("plan.json").exists() {
        bail!("output {} is not empty and holds no compiled fleet (no plan.json): refusing to write into it", out.display());
    }
    Ok(())
}
