//! The model file a board loads: the IR as a JSON header, then the weights as one blob of
//! little-endian f32, in node order. A board's file carries only the weights of the layers it
//! runs; its sha256 is compiled into the board's binary and checked at start-up.

use crate::ir::Model;
use anyhow::{ensure, Context, Result};
use std::io::Read;
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"LGNMODEL";
const VERSION: u32 = 1;

/// Serialise `model`, keeping the weights of the nodes for which `keep` is true.
pub fn write(model: &Model, keep: &dyn Fn(usize) -> bool) -> Vec<u8> {
    let mut header = model.clone();
    let mut blob: Vec<u8> = Vec::new();
    for (id, node) in header.nodes.iter_mut().enumerate() {
        for w in node.op.weights_mut() {
            if keep(id) {
                blob.extend(w.data.iter().flat_map(|f| f.to_le_bytes()));
            } else {
                w.data = Arc::new(vec![]);
            }
        }
    }
    let kept: Vec<usize> = (0..model.nodes.len()).filter(|&i| keep(i)).collect();
    let json = serde_json::to_vec(&(header, kept)).expect("the IR always serialises");
    let mut out = Vec::with_capacity(24 + json.len() + blob.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&blob);
    out
}

/// Read a model file written by [`write`].
pub fn read(bytes: &[u8]) -> Result<Model> {
    let mut r = bytes;
    let m = read_from(&mut r, &|_| true)?;
    ensure!(r.is_empty(), "model file has {} bytes past its weights", r.len());
    Ok(m)
}

/// Read a model file from `r`, keeping the weights of the nodes for which `keep` is true and
/// skipping the others' as they stream by: a board holds what it computes with, never the
/// whole file at once. Stops after the last weights (the caller checks what follows).
pub fn read_from(r: &mut dyn Read, keep: &dyn Fn(usize) -> bool) -> Result<Model> {
    let mut head = [0u8; 20];
    r.read_exact(&mut head).map_err(|_| anyhow::anyhow!("not a legion model file (shorter than its header)"))?;
    ensure!(&head[..8] == MAGIC, "not a legion model file");
    let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    ensure!(version == VERSION, "model file version {version}, this runtime reads {VERSION}");
    let len = u64::from_le_bytes(head[12..20].try_into().expect("8 bytes"));
    ensure!(len < 1 << 30, "model file header of {len} bytes");
    let mut json = vec![0u8; len as usize];
    r.read_exact(&mut json).context("model file truncated in its header")?;
    let (mut model, kept): (Model, Vec<usize>) = serde_json::from_slice(&json).context("model file header")?;
    drop(json);
    let mut chunk = vec![0u8; 1 << 20];
    for id in kept {
        let wanted = keep(id);
        let node = model.nodes.get_mut(id).context("model file names a node it does not have")?;
        for w in node.op.weights_mut() {
            let n = w.volume();
            let mut data: Vec<f32> = if wanted { Vec::with_capacity(n) } else { Vec::new() };
            let mut left = n * 4;
            while left > 0 {
                let take = left.min(chunk.len());
                r.read_exact(&mut chunk[..take]).map_err(|_| anyhow::anyhow!("model file truncated in the weights of node {id}"))?;
                if wanted {
                    data.extend(chunk[..take].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
                }
                left -= take;
            }
            w.data = Arc::new(data);
        }
    }
    Ok(model)
}
