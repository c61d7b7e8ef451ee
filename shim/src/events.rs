//! Where task events go: containerd's event service, or a test double.
//!
//! containerd needs them in order (TaskCreate, TaskStart, TaskExit,
//! TaskDelete): the publisher queues them in call order, so awaiting
//! `publish` before answering a request keeps the order the requests had.

use async_trait::async_trait;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::Context;
use containerd_shim_protos::protobuf::MessageDyn;

/// Sends task events to containerd.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Queues `event` under `topic` (e.g. `/tasks/exit`).
    async fn publish(&self, topic: &'static str, event: Box<dyn MessageDyn>);
}

/// Publishes to containerd through its ttrpc event service.
pub struct RemoteEvents {
    publisher: RemotePublisher,
    namespace: String,
}

impl RemoteEvents {
    pub fn new(publisher: RemotePublisher, namespace: impl Into<String>) -> Self {
        Self {
            publisher,
            namespace: namespace.into(),
        }
    }
}

#[async_trait]
impl EventSink for RemoteEvents {
    async fn publish(&self, topic: &'static str, event: Box<dyn MessageDyn>) {
        if let Err(err) = self
            .publisher
            .publish(Context::default(), topic, &self.namespace, event)
            .await
        {
            tracing::warn!(topic, %err, "event not published");
        }
    }
}
