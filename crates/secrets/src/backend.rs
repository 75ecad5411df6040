//! A secret store, as avp's `types.Backend`: log in once, then read whole secrets by path. A new
//! store is one module implementing [`Backend`].

use std::future::Future;
use std::pin::Pin;

use serde_json::{Map, Value};

use crate::placeholder::SecretRef;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Backend: Send + Sync {
    /// `AVP_TYPE`'s value for it (`vault`, `kubernetessecret`, `sops`).
    fn name(&self) -> &'static str;

    /// Authenticates. Called before the first read and again when the store says the session
    /// has ended; stores that need no login keep this default.
    fn login(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    /// The secret at `r.path` (its `version`, where the store keeps versions): key → value.
    /// Errors are messages that name the store, the path and what it answered.
    fn get_secrets<'a>(
        &'a self,
        r: &'a SecretRef,
    ) -> BoxFuture<'a, Result<Map<String, Value>, String>>;
}
