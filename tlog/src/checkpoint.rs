//! Checkpoints (`tlog-checkpoint`) as signed notes (`signed-note`, Ed25519).
//!
//! A log's keys share one name (its identity, e.g. `drops.example.com/transparency`); each
//! drop's log has the origin line `<name>/<productId>`. Every configured key signs every
//! checkpoint, so an operator rotates by adding the new key (both sign), publishing it, and
//! removing the old one later; verifiers accept any key they know.

use crate::Hash;
use anyhow::{Context, anyhow, bail};
use signed_note::{Note, Signer, StandardSigner, StandardVerifier, Verifier, VerifierList};
use tlog_tiles::Checkpoint;

/// The keys a log signs with.
#[derive(Clone)]
pub struct LogSigner {
    signers: Vec<StandardSigner>,
    verifier_keys: Vec<String>,
    name: String,
}

impl std::fmt::Debug for LogSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSigner").field("keys", &self.verifier_keys).finish_non_exhaustive()
    }
}

impl LogSigner {
    /// From signer keys in the note format (`PRIVATE+KEY+<name>+<id>+<base64>`), all of one
    /// name.
    pub fn new(skeys: &[String]) -> anyhow::Result<Self> {
        if skeys.is_empty() {
            bail!("a transparency log needs a signing key");
        }
        let mut signers = Vec::new();
        let mut verifier_keys = Vec::new();
        for skey in skeys {
            let signer = StandardSigner::new(skey.trim())
                .map_err(|e| anyhow!("a transparency signing key is not a note signer key: {e}"))?;
            verifier_keys.push(verifier_key(skey.trim())?);
            signers.push(signer);
        }
        let name = signers[0].name().to_owned();
        if signers.iter().any(|s| s.name() != name) {
            bail!("all transparency signing keys must have one name (the log's)");
        }
        Ok(Self { signers, verifier_keys, name })
    }

    /// The log's name (the key name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier keys to publish (`<name>+<id>+<base64>`).
    pub fn verifier_keys(&self) -> &[String] {
        &self.verifier_keys
    }

    /// A drop's checkpoint origin line.
    pub fn origin(&self, product_id: &str) -> String {
        format!("{}/{product_id}", self.name)
    }

    /// The signed checkpoint of a log of `size` entries with root `root`.
    pub fn sign(&self, origin: &str, size: u64, root: Hash) -> anyhow::Result<String> {
        let body = Checkpoint::new(origin, size, root, "")
            .map_err(|e| anyhow!("checkpoint for {origin}: {e}"))?;
        let mut note = Note::new(&body.to_bytes(), &[]).map_err(|e| anyhow!("note: {e:?}"))?;
        let signers: Vec<&dyn Signer> = self.signers.iter().map(|s| s as &dyn Signer).collect();
        note.add_sigs(&signers).map_err(|e| anyhow!("signing a checkpoint: {e:?}"))?;
        String::from_utf8(note.to_bytes()).context("a note is text")
    }
}

/// The verifier key of a signer key.
pub fn verifier_key(skey: &str) -> anyhow::Result<String> {
    use base64::Engine;
    let mut parts = skey.splitn(5, '+');
    let (name, key) = match (parts.next(), parts.next(), parts.next(), parts.nth(1)) {
        (Some("PRIVATE"), Some("KEY"), Some(name), Some(key)) => (name, key),
        _ => bail!("not a note signer key"),
    };
    let raw = base64::engine::general_purpose::STANDARD.decode(key).context("signer key")?;
    let seed: [u8; 32] = raw
        .get(1..)
        .and_then(|k| k.try_into().ok())
        .filter(|_| raw[0] == 1)
        .context("not an Ed25519 signer key")?;
    let public = ed25519_verifying_key(&seed);
    Ok(signed_note::new_ed25519_verifier_key(name, &public))
}

fn ed25519_verifying_key(seed: &[u8; 32]) -> ed25519_dalek::VerifyingKey {
    ed25519_dalek::SigningKey::from_bytes(seed).verifying_key()
}

/// A fresh signer key and its verifier key for a log named `name`, from a 32-byte seed.
pub fn key_from_seed(name: &str, seed: &[u8; 32]) -> anyhow::Result<(String, String)> {
    use base64::Engine;
    if !signed_note::is_key_name_valid(name) {
        bail!("{name:?} is not a valid key name (no spaces or '+')");
    }
    let public = ed25519_verifying_key(seed);
    let vkey = signed_note::new_ed25519_verifier_key(name, &public);
    let id = vkey.split('+').nth(1).context("verifier key id")?.to_owned();
    let private = [&[1u8][..], seed].concat();
    let skey = format!(
        "PRIVATE+KEY+{name}+{id}+{}",
        base64::engine::general_purpose::STANDARD.encode(private)
    );
    Ok((skey, vkey))
}

/// The size a checkpoint claims, unverified (to know which files to fetch before checking).
pub fn size_of(note: &[u8]) -> anyhow::Result<u64> {
    let parsed = Note::from_bytes(note).map_err(|e| anyhow!("not a signed note: {e:?}"))?;
    let body = Checkpoint::from_bytes(parsed.text()).map_err(|e| anyhow!("checkpoint: {e}"))?;
    Ok(body.size())
}

/// A checkpoint that verified.
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// The names and ids of the keys whose signatures verified.
    pub signed_by: Vec<String>,
}

/// Opens a signed checkpoint with the verifier keys one trusts: at least one must have
/// signed it, and every signature by a known key must verify.
pub fn open(note: &[u8], verifier_keys: &[String]) -> anyhow::Result<Opened> {
    let mut known: Vec<Box<dyn Verifier>> = Vec::new();
    for vkey in verifier_keys {
        let verifier = StandardVerifier::new(vkey)
            .map_err(|e| anyhow!("{vkey:?} is not a note verifier key: {e}"))?;
        known.push(Box::new(verifier));
    }
    let parsed = Note::from_bytes(note)
        .map_err(|e| anyhow!("the checkpoint is not a signed note: {e:?}"))?;
    let (verified, _) = parsed
        .verify(&VerifierList::new(known))
        .map_err(|e| anyhow!("the checkpoint's signature does not verify: {e:?}"))?;
    let body =
        Checkpoint::from_bytes(parsed.text()).map_err(|e| anyhow!("the checkpoint's body: {e}"))?;
    Ok(Opened {
        origin: body.origin().to_owned(),
        size: body.size(),
        root: *body.hash(),
        signed_by: verified.iter().map(|s| format!("{}+{:08x}", s.name(), s.id())).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_checkpoint_opens_with_its_key_and_no_other() {
        let (skey, vkey) = key_from_seed("drops.example/transparency", &[7; 32]).unwrap();
        assert_eq!(verifier_key(&skey).unwrap(), vkey);
        let signer = LogSigner::new(&[skey]).unwrap();
        let origin = signer.origin("p1");
        let root = Hash([3; 32]);
        let note = signer.sign(&origin, 42, root).unwrap();
        assert!(note.starts_with("drops.example/transparency/p1\n42\n"), "{note}");
        let opened = open(note.as_bytes(), std::slice::from_ref(&vkey)).unwrap();
        assert_eq!((opened.origin.as_str(), opened.size, opened.root), (origin.as_str(), 42, root));

        let (_, other) = key_from_seed("drops.example/transparency", &[8; 32]).unwrap();
        assert!(open(note.as_bytes(), &[other]).is_err());
        let forged = note.replace("\n42\n", "\n43\n");
        assert!(open(forged.as_bytes(), &[vkey]).is_err());
    }

    #[test]
    fn rotation_signs_with_both_keys_of_one_name() {
        let (old, old_v) = key_from_seed("log.example", &[1; 32]).unwrap();
        let (new, new_v) = key_from_seed("log.example", &[2; 32]).unwrap();
        let signer = LogSigner::new(&[old.clone(), new]).unwrap();
        let note = signer.sign("log.example/p", 1, Hash([0; 32])).unwrap();
        assert_eq!(open(note.as_bytes(), &[old_v]).unwrap().signed_by.len(), 1);
        assert_eq!(open(note.as_bytes(), &[new_v]).unwrap().size, 1);
        let (elsewhere, _) = key_from_seed("other.example", &[3; 32]).unwrap();
        assert!(LogSigner::new(&[old, elsewhere]).is_err());
    }
}
