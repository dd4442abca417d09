//! Where the relay's events go. A [`Sink`] publishes a batch in order and
//! says `Ok` only once the broker holds every event of it durably.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::context::{Context, ContextBuilder};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream;
use bytes::Bytes;

/// One event ready to publish.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub subject: String,
    /// The event id, also the broker's de-duplication id.
    pub id: String,
    pub payload: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
    #[error("cannot create or read stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error("publish failed: {0}")]
    Publish(String),
}

/// A broker the relay publishes to.
pub trait Sink: Send {
    /// Publishes `batch` in order. `Ok` means the broker acknowledged every
    /// event; after an error some may have been taken, and the relay
    /// publishes the whole batch again (the ids make that harmless).
    fn publish(&mut self, batch: &[Outgoing]) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// How long the broker has to acknowledge a publish.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Publishes awaiting their acknowledgement at most; a batch is sent this
/// many at a time.
const ACKS_INFLIGHT_MAX: usize = 8_192;

/// The stream's de-duplication window: a re-delivery inside it is dropped
/// by the broker, one after it by the consumer (by id).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// NATS JetStream: each event a message on its subject, with the event id
/// as `Nats-Msg-Id`. Connects on first use; the client reconnects by
/// itself after that.
pub struct NatsSink {
    url: String,
    stream: String,
    context: Option<Context>,
}

impl NatsSink {
    pub fn new(url: &str, stream: &str) -> NatsSink {
        NatsSink { url: url.to_string(), stream: stream.to_string(), context: None }
    }

    async fn context(&mut self) -> Result<&Context, SinkError> {
        if self.context.is_none() {
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(2))
                .connect(&self.url)
                .await
                .map_err(|e| SinkError::Connect { url: self.url.clone(), message: e.to_string() })?;
            let context = ContextBuilder::new()
                .timeout(ACK_TIMEOUT)
                .max_ack_inflight(ACKS_INFLIGHT_MAX)
                .backpressure_on_inflight(true)
                .build(client);
            ensure_stream(&context, &self.stream).await?;
            self.context = Some(context);
        }
        Ok(self.context.as_ref().expect("connected above"))
    }
}

/// Creates the stream (`inventory.>`) if it does not exist.
pub async fn ensure_stream(context: &Context, name: &str) -> Result<(), SinkError> {
    context
        .get_or_create_stream(stream::Config {
            name: name.to_string(),
            subjects: vec![format!("{}>", crate::event::SUBJECT_PREFIX)],
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(|e| SinkError::Stream { stream: name.to_string(), message: e.to_string() })
}

impl Sink for NatsSink {
    async fn publish(&mut self, batch: &[Outgoing]) -> Result<(), SinkError> {
        let context = self.context().await?;
        // Messages are sent back to back and their acknowledgements awaited
        // together, a chunk at a time: one round trip per chunk, and the
        // connection keeps them in order. A chunk is at most the
        // acknowledgements the context lets wait, since a send past that
        // waits for one of them to be awaited.
        for chunk in batch.chunks(ACKS_INFLIGHT_MAX) {
            let mut acks = Vec::with_capacity(chunk.len());
            for event in chunk {
                let message = PublishMessage::build().payload(event.payload.clone()).message_id(&event.id);
                let ack = context
                    .send_publish(event.subject.clone(), message)
                    .await
                    .map_err(|e| SinkError::Publish(e.to_string()))?;
                acks.push(ack);
            }
            for ack in acks {
                ack.await.map_err(|e| SinkError::Publish(e.to_string()))?;
            }
        }
        Ok(())
    }
}
