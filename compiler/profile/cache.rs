//! The profile cache: one JSON record per line in `<cache dir>/profiles.jsonl`.
//!
//! A record's key is the sha256 of what determines the measurement: its kind, the board's
//! identity (from the probe's facts; boards with the same identity share records), the probe's
//! hash, the layer or group signature, the rows and the measurement settings. Every record also
//! carries a checksum of its own content: a line that does not parse, whose checksum or key
//! does not match, is corrupt; it is never trusted, its measurement is made again and the file
//! is rewritten without it.

use anyhow::{Context, Result};
use legion_runtime::plan::hex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How a measurement is made; part of every record's key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Settings {
    pub warmup: usize,
    pub repeats: usize,
    pub threads: usize,
    /// CPUs the probe is pinned to (a real board's target's `cores`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cores: Vec<usize>,
}

/// What a record is about (everything but the value): its key is the hash of this.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RecordId {
    /// `segment` (one layer between cut points), `group` (a fused group on a band),
    /// `fss-check` (a group the full search chose, measured once more), `tail`, `facts`, `link`.
    pub kind: String,
    /// The board's identity (for `facts` and `link`: its address).
    pub identity: String,
    /// sha256 of the probe (see `codegen::probe_sha256`).
    pub probe: String,
    /// Layer or group signature (empty for `facts` and `link`).
    pub signature: String,
    /// Output rows `[start, end)` of the band measured.
    pub rows: (usize, usize),
    pub settings: Settings,
}

impl RecordId {
    pub fn key(&self) -> String {
        hex(&Sha256::digest(serde_json::to_vec(self).expect("a record id serialises")))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub key: String,
    #[serde(flatten)]
    pub id: RecordId,
    pub value: serde_json::Value,
    /// sha256 of the record serialised with an empty `check`.
    pub check: String,
}

impl Record {
    pub fn new(id: RecordId, value: serde_json::Value) -> Record {
        let mut r = Record { key: id.key(), id, value, check: String::new() };
        r.check = r.checksum();
        r
    }
    fn checksum(&self) -> String {
        let mut r = self.clone();
        r.check.clear();
        hex(&Sha256::digest(serde_json::to_vec(&r).expect("a record serialises")))
    }
    fn is_sound(&self) -> bool {
        self.check == self.checksum() && self.key == self.id.key()
    }
}

/// The records of one cache directory. Shared by the boards' threads; a new record is appended
/// to the file at once, so a crash keeps every record that was complete.
pub struct Cache {
    path: PathBuf,
    records: Mutex<HashMap<String, Record>>,
    /// Which file (inode) has been read how far: the records other processes appended since
    /// are read before each append (all of a file that another process compacted meanwhile).
    read_to: Mutex<(u64, u64)>,
    /// Lines found corrupt when the cache was opened.
    pub corrupt: usize,
}

impl Cache {
    /// Open (or start) the cache in `dir`. Corrupt lines are counted and dropped from the file.
    pub fn open(dir: &Path) -> Result<Cache> {
        let path = dir.join("profiles.jsonl");
        // Read (and compact) with no other legionc appending meanwhile.
        let _lock = if path.exists() { Some(file_lock(&path)?) } else { None };
        let mut records = HashMap::new();
        let mut corrupt = 0;
        if let Ok(text) = std::fs::read(&path) {
            for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                match serde_json::from_slice::<Record>(line) {
                    Ok(r) if r.is_sound() => {
                        records.insert(r.key.clone(), r);
                    }
                    _ => corrupt += 1,
                }
            }
        }
        let cache = Cache { path, records: Mutex::new(records), read_to: Mutex::new((0, 0)), corrupt };
        if corrupt > 0 {
            cache.rewrite()?;
        }
        *cache.read_to.lock().unwrap() = std::fs::metadata(&cache.path).map_or((0, 0), |m| (std::os::unix::fs::MetadataExt::ino(&m), m.len()));
        Ok(cache)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, id: &RecordId) -> Option<Record> {
        self.records.lock().unwrap().get(&id.key()).cloned()
    }

    pub fn len(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Add (or replace) a record and append it to the file. If another legionc process
    /// appended a record of the same key since this one last read the file (both measured the
    /// same thing at once), that record is kept and returned instead: the first measurement
    /// wins, so every process, and every later read of the file, plans from the same value.
    pub fn insert(&self, id: RecordId, value: serde_json::Value) -> Result<Record> {
        let r = Record::new(id, value);
        let mut line = serde_json::to_vec(&r)?;
        line.push(b'\n');
        let mut records = self.records.lock().unwrap();
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating the profile cache {}", dir.display()))?;
        }
        // Other legionc processes append to the same file: one line at a time, under the lock.
        let _lock = file_lock(&self.path)?;
        let mut f = std::fs::OpenOptions::new().create(true).read(true).append(true).open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        let mut read_to = self.read_to.lock().unwrap();
        let inode = std::os::unix::fs::MetadataExt::ino(&f.metadata().with_context(|| format!("reading {}", self.path.display()))?);
        if inode != read_to.0 {
            *read_to = (inode, 0);
        }
        let mut theirs = Vec::new();
        {
            use std::io::{Read, Seek};
            f.seek(std::io::SeekFrom::Start(read_to.1)).with_context(|| format!("reading {}", self.path.display()))?;
            f.read_to_end(&mut theirs).with_context(|| format!("reading {}", self.path.display()))?;
        }
        read_to.1 += theirs.len() as u64;
        let mut first = None;
        for other in theirs.split(|&b| b == b'\n').filter(|l| !l.is_empty()).filter_map(|l| serde_json::from_slice::<Record>(l).ok()).filter(Record::is_sound) {
            if other.key == r.key && first.is_none() {
                first = Some(other.clone());
            }
            records.insert(other.key.clone(), other);
        }
        if let Some(first) = first {
            records.insert(first.key.clone(), first.clone());
            return Ok(first);
        }
        f.write_all(&line).with_context(|| format!("writing {}", self.path.display()))?;
        read_to.1 += line.len() as u64;
        records.insert(r.key.clone(), r.clone());
        Ok(r)
    }

    /// Write the file again with the sound records only (a temporary file, then a rename).
    fn rewrite(&self) -> Result<()> {
        let records = self.records.lock().unwrap();
        let mut all: Vec<&Record> = records.values().collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        let mut text = Vec::new();
        for r in all {
            serde_json::to_writer(&mut text, r)?;
            text.push(b'\n');
        }
        crate::write_atomic(&self.path, &text)
    }
}

/// The cache file's lock (`profiles.jsonl.lock` beside it), held exclusively until dropped:
/// appends and the compaction of one file never interleave between processes.
fn file_lock(path: &Path) -> Result<std::fs::File> {
    let lock = path.with_extension("jsonl.lock");
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock).with_context(|| format!("opening {}", lock.display()))?;
    f.lock().with_context(|| format!("locking {}", lock.display()))?;
    Ok(f)
}

/// The default cache directory: `$LEGION_CACHE_DIR`, else `$XDG_CACHE_HOME/legionc`, else
/// `~/.cache/legionc`.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LEGION_CACHE_DIR") {
        return d.into();
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("legionc");
    }
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/tmp".into()).join(".cache/legionc")
}
