//! One attempt at one message: signed, POSTed, settled.

use std::sync::Arc;
use std::time::Duration;

use tributary_core::Clock;
use tributary_secrets::SecretKey;
use tributary_store::{Attempted, Message, Store, Subscription};
use tributary_webhooks::{Scheme, sign_standard};

use crate::schedule::Verdict;
use crate::{Error, OutboundOptions};

/// The HTTP side of deliveries.
#[derive(Debug, Clone)]
pub(crate) struct Sender {
    client: reqwest::Client,
    key: Arc<SecretKey>,
    timeout: Duration,
}

impl Sender {
    pub(crate) fn new(key: Arc<SecretKey>, options: &OutboundOptions) -> Result<Self, Error> {
        // Err: a provider is installed already, which is the goal.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            // A redirect is an answer that is not 2xx: a failed attempt,
            // never a POST to somewhere the subscription does not name.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| Error::Client(error.to_string()))?;
        Ok(Self {
            client,
            key,
            timeout: options.timeout,
        })
    }

    /// Makes attempt `message.attempts` at `message` (claimed) to
    /// `subscription` of connection `connection`, and records how it
    /// ended. What was recorded (`None`: the store no longer had the
    /// attempt — replayed or removed meanwhile).
    pub(crate) async fn attempt(
        &self,
        store: &dyn Store,
        clock: &dyn Clock,
        options: &OutboundOptions,
        message: &Message,
        subscription: &Subscription,
        connection: &str,
    ) -> tributary_store::Result<Option<Attempted>> {
        let verdict = self.post(clock, message, subscription, connection).await;
        let now = clock.now();
        let outcome = verdict.settle(
            message.attempts,
            now,
            &options.schedule,
            options.max_retry_after,
        );
        match &outcome {
            Attempted::Delivered { .. } => {}
            Attempted::Retry { error, at, .. } => tracing::info!(
                subscription = subscription.id,
                message = %message.message_id,
                attempt = message.attempts,
                %error,
                next = %at,
                "delivery failed; tried again later"
            ),
            Attempted::Dead { error, .. } => tracing::warn!(
                subscription = subscription.id,
                message = %message.message_id,
                attempt = message.attempts,
                %error,
                "delivery failed for the last time: a dead letter (`tributary subscriptions replay`)"
            ),
            Attempted::Gone { error } => tracing::warn!(
                subscription = subscription.id,
                message = %message.message_id,
                %error,
                "subscription disabled (`tributary subscriptions enable`)"
            ),
        }
        let kept = store
            .settle_message(message.id, message.attempts, &outcome, now)
            .await?;
        Ok(kept.then_some(outcome))
    }

    /// The POST and what its answer means.
    async fn post(
        &self,
        clock: &dyn Clock,
        message: &Message,
        subscription: &Subscription,
        connection: &str,
    ) -> Verdict {
        let failed = |error: String| Verdict::Failed {
            status: None,
            error,
            not_before: None,
        };
        let secret = match tributary_secrets::open_subscription_secret(
            &self.key,
            &subscription.sealed_secret,
            connection,
        ) {
            Ok(secret) => secret,
            Err(error) => return failed(format!("cannot open the subscription's secret: {error}")),
        };
        let key = match Scheme::StandardWebhooks.key(&secret) {
            Ok(key) => tributary_secrets::Zeroizing::new(key),
            Err(why) => return failed(format!("the subscription's secret is unusable: {why}")),
        };
        let timestamp = clock.now().timestamp();
        let signature = sign_standard(
            &key,
            &message.message_id,
            timestamp,
            message.body.as_bytes(),
        );
        let sent = self
            .client
            .post(&subscription.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &message.message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(message.body.clone())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                Verdict::of_status(
                    response.status().as_u16(),
                    retry_after.as_deref(),
                    clock.now(),
                )
            }
            Err(error) => failed(self.describe(&error)),
        }
    }

    /// A failed request in words (never its URL, which may carry a
    /// password).
    fn describe(&self, error: &reqwest::Error) -> String {
        if error.is_timeout() {
            return format!("no answer within {} s", self.timeout.as_secs_f64());
        }
        let mut text = match error.is_connect() {
            true => "cannot connect".to_owned(),
            false => "the request failed".to_owned(),
        };
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}
