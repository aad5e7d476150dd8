//! The model file a board loads: the IR as a JSON header, then the weights as one blob of
//! little-endian f32, in node order. A board's file carries only the weights of the layers it
//! runs; its sha256 is compiled into the board's binary and checked at start-up.

use crate::ir::Model;
use anyhow::{bail, ensure, Context, Result};
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
    ensure!(bytes.len() >= 20 && &bytes[..8] == MAGIC, "not a legion model file");
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    ensure!(version == VERSION, "model file version {version}, this runtime reads {VERSION}");
    let len = u64::from_le_bytes(bytes[12..20].try_into().unwrap()) as usize;
    ensure!(bytes.len() >= 20 + len, "model file truncated in its header");
    let (mut model, kept): (Model, Vec<usize>) =
        serde_json::from_slice(&bytes[20..20 + len]).context("model file header")?;
    let mut blob = &bytes[20 + len..];
    for id in kept {
        let node = model.nodes.get_mut(id).context("model file names a node it does not have")?;
        for w in node.op.weights_mut() {
            let n = w.volume() * 4;
            if blob.len() < n {
                bail!("model file truncated in the weights of node {id}");
            }
            w.data = Arc::new(blob[..n].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect());
            blob = &blob[n..];
        }
    }
    ensure!(blob.is_empty(), "model file has {} bytes past its weights", blob.len());
    Ok(model)
}
