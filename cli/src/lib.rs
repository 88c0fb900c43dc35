//! flashgate-cli: development identity (an Ed25519 issuer key pair published as a JWKS, the
//! edge↔origin secret) and token minting. In production the identity provider holds the
//! private key; these commands stand in for it locally and in tests. [`check`] is the
//! invariant checker behind `flashgate check` (the origin's `check` module, which the
//! operator console runs too).

pub use flashgate_origin::check;
pub mod transparency;

use anyhow::{Context, Result};
use flashgate_core::token::{Jwk, Jwks, Role};
use jwt_simple::prelude::*;
use std::path::{Path, PathBuf};
use uuid::Uuid;

pub const DEV_KID: &str = "dev-1";
pub const DEV_ISSUER: &str = "flashgate-dev";
pub const DEV_AUDIENCE: &str = "flashgate";
/// The development logs' name (their checkpoints' origin lines begin with it).
pub const DEV_LOG_NAME: &str = "localhost/transparency";

/// The development identity, as files in one directory.
#[derive(Debug, Clone)]
pub struct DevIdentity {
    pub dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct RoleClaim {
    role: Role,
}

impl DevIdentity {
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("issuer-ed25519.key")
    }
    pub fn jwks_path(&self) -> PathBuf {
        self.dir.join("jwks.json")
    }
    pub fn secret_path(&self) -> PathBuf {
        self.dir.join("edge-secret.hex")
    }
    /// The public logs' signing key (a note signer key).
    pub fn transparency_key_path(&self) -> PathBuf {
        self.dir.join("transparency.key")
    }
    /// The secret buyer pseudonyms derive from.
    pub fn transparency_secret_path(&self) -> PathBuf {
        self.dir.join("transparency-secret.hex")
    }

    /// Creates the key pair, JWKS and edge secret unless they exist; returns whether it did.
    pub fn ensure(dir: &Path) -> Result<(Self, bool)> {
        let me = Self { dir: dir.to_owned() };
        if me.key_path().exists() && me.jwks_path().exists() && me.secret_path().exists() {
            me.ensure_transparency()?;
            return Ok((me, false));
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let pair = Ed25519KeyPair::generate().with_key_id(DEV_KID);
        let jwks = Jwks { keys: vec![Jwk::ed25519(DEV_KID, &pair.public_key().to_bytes())] };
        std::fs::write(me.key_path(), hex::encode(pair.to_bytes()))?;
        std::fs::write(me.jwks_path(), serde_json::to_string_pretty(&jwks)?)?;
        std::fs::write(me.secret_path(), hex::encode(rand::random::<[u8; 32]>()))?;
        me.ensure_transparency()?;
        Ok((me, true))
    }

    /// The public logs' signing key and pseudonym secret, unless they exist (a development
    /// identity made before the logs gets them on its next use).
    fn ensure_transparency(&self) -> Result<()> {
        if !self.transparency_key_path().exists() {
            let (skey, _) = flashgate_tlog::checkpoint::key_from_seed(
                DEV_LOG_NAME,
                &rand::random::<[u8; 32]>(),
            )?;
            std::fs::write(self.transparency_key_path(), skey)?;
        }
        if !self.transparency_secret_path().exists() {
            std::fs::write(
                self.transparency_secret_path(),
                hex::encode(rand::random::<[u8; 32]>()),
            )?;
        }
        Ok(())
    }

    pub fn transparency_key(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.transparency_key_path())?.trim().to_owned())
    }

    pub fn transparency_secret(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.transparency_secret_path())?.trim().to_owned())
    }

    pub fn key_pair(&self) -> Result<Ed25519KeyPair> {
        let hex_key = std::fs::read_to_string(self.key_path())
            .with_context(|| format!("reading {}", self.key_path().display()))?;
        let bytes = hex::decode(hex_key.trim()).context("the issuer key is not hex")?;
        Ok(Ed25519KeyPair::from_bytes(&bytes)
            .map_err(|e| anyhow::anyhow!("bad issuer key: {e}"))?
            .with_key_id(DEV_KID))
    }

    pub fn jwks(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.jwks_path())?)
    }

    pub fn edge_secret(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.secret_path())?.trim().to_owned())
    }
}

/// What to put in a minted token.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub subject: Uuid,
    pub role: Role,
    pub valid_for: std::time::Duration,
    pub issuer: String,
    pub audience: String,
}

impl TokenSpec {
    pub fn buyer(subject: Uuid) -> Self {
        Self {
            subject,
            role: Role::Buyer,
            valid_for: std::time::Duration::from_secs(3600),
            issuer: DEV_ISSUER.into(),
            audience: DEV_AUDIENCE.into(),
        }
    }

    pub fn admin(subject: Uuid) -> Self {
        Self { role: Role::Admin, ..Self::buyer(subject) }
    }
}

pub fn mint(pair: &Ed25519KeyPair, spec: &TokenSpec) -> Result<String> {
    let claims = Claims::with_custom_claims(
        RoleClaim { role: spec.role },
        Duration::from_secs(spec.valid_for.as_secs()),
    )
    .with_subject(spec.subject)
    .with_issuer(&spec.issuer)
    .with_audience(&spec.audience);
    pair.sign(claims).map_err(|e| anyhow::anyhow!("signing: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashgate_core::token::{KeySet, TokenPolicy, TokenVerifier};

    #[test]
    fn minted_tokens_verify_against_the_published_jwks() {
        let dir = std::env::temp_dir().join(format!("fg-cli-{}", Uuid::new_v4()));
        let (id, created) = DevIdentity::ensure(&dir).unwrap();
        assert!(created);
        assert!(!DevIdentity::ensure(&dir).unwrap().1, "a second run keeps the keys");
        let user = Uuid::new_v4();
        let token = mint(&id.key_pair().unwrap(), &TokenSpec::admin(user)).unwrap();
        let verifier = TokenVerifier::new(
            KeySet::from_jwks_json(&id.jwks().unwrap()).unwrap(),
            TokenPolicy {
                issuer: DEV_ISSUER.into(),
                audience: DEV_AUDIENCE.into(),
                leeway: std::time::Duration::from_secs(5),
            },
        );
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let v = verifier.verify(&token, now).unwrap();
        assert_eq!(v.user_id, user);
        assert_eq!(v.role, Role::Admin);
        assert_eq!(id.edge_secret().unwrap().len(), 64);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
