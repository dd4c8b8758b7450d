//! Local HTTPS stand-ins for the push providers longlink talks to (issue 12). Apple's and
//! Google's endpoints cannot be reached from a test (and must not be: a test would need real
//! credentials and devices), so these servers speak each provider's documented contract —
//! status codes, headers, error bodies — on 127.0.0.1 with a certificate from a CA made per
//! fake, and record exactly what the client sent so a test can assert it:
//!
//! - [`FakeApns`]: HTTP/2 only, as APNs; `POST /3/device/<token>`.
//! - [`FakeFcm`]: the service account's OAuth token endpoint and FCM HTTP v1 messages:send.
//! - [`FakeHttp`]: a vendor push / SMS gateway endpoint for `[[push.http]]` providers.
//!
//! Answers are scriptable ([`Reply`] queues, or a closure per request); without a script each
//! fake answers as the real provider would to a good request. `start_counting` variants only
//! count requests (for the bench). [`TestApnsKey`] and [`TestServiceAccount`] make fresh
//! credentials and verify the JWTs signed with them.

mod apns;
mod fcm;
mod http;
mod keys;
mod server;

pub use apns::FakeApns;
pub use fcm::{FAKE_PROJECT, FCM_SCOPE, FakeFcm};
pub use http::FakeHttp;
pub use keys::{TestApnsKey, TestServiceAccount};
pub use server::{FakeServer, Recorded, Reply, Responder, StartError};
