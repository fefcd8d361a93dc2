//! The JetStream [`StateStore`]: buckets are NATS JetStream key-value stores (async-nats
//! `jetstream::kv`), so NATS replicates, versions and watches the cluster's state.
//!
//! Only what nats-server 2.9 offers is used (no per-message TTLs, no multi-filter watches).

use crate::kv::{BucketConfig, KvBucket, KvEntry, KvError, KvWatch, StateStore, WatchFrom};
use async_nats::jetstream;
use async_nats::jetstream::kv::{Operation, Store};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use std::sync::Arc;

/// JetStream error code: JetStream not enabled for the account.
const NOT_ENABLED_FOR_ACCOUNT: u64 = 10039;
/// JetStream error code: JetStream not enabled.
const NOT_ENABLED: u64 = 10076;
/// Time allowed for the JetStream availability check.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Buckets on NATS JetStream. Cheap to clone.
#[derive(Clone)]
pub struct JetStreamState {
    client: async_nats::Client,
    context: jetstream::Context,
}

impl JetStreamState {
    /// Uses JetStream through `client` (the bus's connection).
    pub fn new(client: async_nats::Client) -> JetStreamState {
        JetStreamState {
            context: jetstream::new(client.clone()),
            client,
        }
    }
}

fn unavailable(err: impl std::fmt::Display) -> KvError {
    KvError::Unavailable(err.to_string())
}

/// The stream behind a bucket, as async-nats' `create_key_value` makes it (which cannot be
/// used on nats-server 2.9: it reads account fields 2.9 does not send).
fn stream_config(config: &BucketConfig) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: format!("KV_{}", config.name),
        description: Some(config.description.clone()),
        subjects: vec![format!("$KV.{}.>", config.name)],
        max_messages_per_subject: config.history.max(1),
        max_age: config.max_age,
        storage: jetstream::stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        num_replicas: config.replicas.max(1),
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    }
}

impl StateStore for JetStreamState {
    fn open(
        &self,
        config: &BucketConfig,
        create: bool,
    ) -> BoxFuture<'_, Result<Arc<dyn KvBucket>, KvError>> {
        let config = config.clone();
        async move {
            self.check().await?;
            if create {
                let wanted = stream_config(&config);
                match self.context.get_stream(wanted.name.clone()).await {
                    Ok(mut existing) => {
                        let info = existing.info().await.map_err(unavailable)?.config.clone();
                        if info.max_age != wanted.max_age
                            || info.max_messages_per_subject != wanted.max_messages_per_subject
                        {
                            // Bring the settings (the revocation TTL) up to this process' flags.
                            let mut updated = info;
                            updated.max_age = wanted.max_age;
                            updated.max_messages_per_subject = wanted.max_messages_per_subject;
                            self.context
                                .update_stream(updated)
                                .await
                                .map_err(unavailable)?;
                        }
                    }
                    Err(_) => {
                        if let Err(err) = self.context.create_stream(wanted).await {
                            // Another replica may have created it at the same time.
                            tracing::debug!(bucket = %config.name, error = %err, "bucket not created");
                        }
                    }
                }
            }
            let store = self
                .context
                .get_key_value(config.name.clone())
                .await
                .map_err(|e| match e.kind() {
                    jetstream::context::KeyValueErrorKind::GetBucket => {
                        KvError::NoBucket(config.name.clone())
                    }
                    _ => unavailable(e),
                })?;
            Ok(Arc::new(JetStreamBucket {
                name: config.name,
                store,
            }) as Arc<dyn KvBucket>)
        }
        .boxed()
    }

    fn check(&self) -> BoxFuture<'_, Result<(), KvError>> {
        async move {
            // A plain request: async-nats' `query_account` cannot read 2.9's answer.
            let reply = tokio::time::timeout(
                CHECK_TIMEOUT,
                self.client.request("$JS.API.INFO", Bytes::new()),
            )
            .await
            .map_err(|_| KvError::Unavailable("JetStream did not answer in time".into()))?;
            let msg = match reply {
                Ok(m) => m,
                Err(err) if err.kind() == async_nats::RequestErrorKind::NoResponders => {
                    return Err(KvError::NoJetStream(
                        "no JetStream API responds (start nats-server with -js)".into(),
                    ));
                }
                Err(err) => return Err(unavailable(err)),
            };
            let body: serde_json::Value =
                serde_json::from_slice(&msg.payload).map_err(unavailable)?;
            match body.get("error") {
                None => Ok(()),
                Some(e) => {
                    let code = e.get("err_code").and_then(serde_json::Value::as_u64);
                    let text = e
                        .get("description")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("JetStream error")
                        .to_owned();
                    if matches!(code, Some(NOT_ENABLED_FOR_ACCOUNT | NOT_ENABLED)) {
                        Err(KvError::NoJetStream(text))
                    } else {
                        Err(KvError::Unavailable(text))
                    }
                }
            }
        }
        .boxed()
    }
}

struct JetStreamBucket {
    name: String,
    store: Store,
}

fn entry(e: jetstream::kv::Entry) -> KvEntry {
    KvEntry {
        deleted: e.operation != Operation::Put,
        key: e.key,
        value: e.value,
        revision: e.revision,
    }
}

impl KvBucket for JetStreamBucket {
    fn name(&self) -> &str {
        &self.name
    }

    fn entry(&self, key: &str) -> BoxFuture<'_, Result<Option<KvEntry>, KvError>> {
        let key = key.to_owned();
        async move {
            if !crate::kv::is_valid_key(&key) {
                return Err(KvError::InvalidKey);
            }
            let found = self.store.entry(key).await.map_err(unavailable)?;
            Ok(found.map(entry).filter(|e| !e.deleted))
        }
        .boxed()
    }

    fn put(&self, key: &str, value: Bytes) -> BoxFuture<'_, Result<u64, KvError>> {
        let key = key.to_owned();
        async move {
            if !crate::kv::is_valid_key(&key) {
                return Err(KvError::InvalidKey);
            }
            self.store.put(key, value).await.map_err(unavailable)
        }
        .boxed()
    }

    fn create(&self, key: &str, value: Bytes) -> BoxFuture<'_, Result<u64, KvError>> {
        let key = key.to_owned();
        async move {
            use jetstream::kv::CreateErrorKind;
            if !crate::kv::is_valid_key(&key) {
                return Err(KvError::InvalidKey);
            }
            self.store
                .create(key, value)
                .await
                .map_err(|e| match e.kind() {
                    CreateErrorKind::AlreadyExists => KvError::WrongRevision,
                    CreateErrorKind::InvalidKey => KvError::InvalidKey,
                    _ => unavailable(e),
                })
        }
        .boxed()
    }

    fn update(
        &self,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> BoxFuture<'_, Result<u64, KvError>> {
        let key = key.to_owned();
        async move {
            use jetstream::kv::UpdateErrorKind;
            if !crate::kv::is_valid_key(&key) {
                return Err(KvError::InvalidKey);
            }
            self.store
                .update(key, value, revision)
                .await
                .map_err(|e| match e.kind() {
                    UpdateErrorKind::WrongLastRevision => KvError::WrongRevision,
                    UpdateErrorKind::InvalidKey => KvError::InvalidKey,
                    _ => unavailable(e),
                })
        }
        .boxed()
    }

    fn delete(&self, key: &str) -> BoxFuture<'_, Result<(), KvError>> {
        let key = key.to_owned();
        async move {
            if !crate::kv::is_valid_key(&key) {
                return Err(KvError::InvalidKey);
            }
            self.store.delete(key).await.map_err(unavailable)
        }
        .boxed()
    }

    fn last_revision(&self) -> BoxFuture<'_, Result<Option<u64>, KvError>> {
        async move {
            let info = self.store.stream.get_info().await.map_err(unavailable)?;
            Ok((info.state.messages > 0).then_some(info.state.last_sequence))
        }
        .boxed()
    }

    fn watch(&self, key: &str, from: WatchFrom) -> BoxFuture<'_, Result<KvWatch, KvError>> {
        let key = key.to_owned();
        async move {
            let watch = match from {
                WatchFrom::Current => self.store.watch_with_history(key).await,
                WatchFrom::Revision(r) => self.store.watch_from_revision(key, r.max(1)).await,
            }
            .map_err(unavailable)?;
            let stream: KvWatch = watch.map(|r| r.map(entry).map_err(unavailable)).boxed();
            Ok(stream)
        }
        .boxed()
    }
}
