//! The two adapters set up to follow redirects, as their docs say to.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use procore_auth_core::{Error as AuthError, TokenManager};
use procore_auth_reqwest::ProcoreAuthMiddleware;
use procore_auth_tower::{ProcoreAuth, ProcoreAuthLayer};
use tower::{Layer, ServiceExt};
use tower_http::follow_redirect::policy::{self, PolicyExt};
use tower_http::follow_redirect::{FollowRedirect, FollowRedirectLayer};

use crate::client::{reqwest_reply, reqwest_request, tower_reply};
use crate::{Adapter, Reply};

type Hyper = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;
type CloneFull = fn(&Full<Bytes>) -> Option<Full<Bytes>>;
/// tower-http's standard policy, plus copying `Full` bodies so that 307/308 are
/// followed with their body, as the reqwest middleware does.
type TowerPolicy = policy::And<policy::Standard, policy::CloneBodyFn<CloneFull>>;

/// A client that follows redirects through one [`Adapter`], set up the documented way:
/// for [`Adapter::Tower`], tower-http's `FollowRedirectLayer` *outside*
/// `ProcoreAuthLayer` (over a plain `hyper_util` client), so every hop passes the
/// request policy; for [`Adapter::Reqwest`], `ProcoreAuthMiddleware` on a client from
/// `procore_auth_reqwest::client_builder()` (which follows no redirects itself: the
/// middleware does, hop by hop).
///
/// What each hop carried is recorded by the servers ([`Origin`](crate::Origin)), not
/// here. Cheap to clone.
#[derive(Clone, Debug)]
pub struct FollowingClient {
    inner: Inner,
}

#[derive(Clone, Debug)]
enum Inner {
    Tower(FollowRedirect<ProcoreAuth<Hyper>, TowerPolicy>),
    Reqwest(reqwest_middleware::ClientWithMiddleware),
}

impl FollowingClient {
    /// The adapter's redirect-following setup over `manager`.
    ///
    /// # Panics
    ///
    /// If reqwest cannot build a client.
    pub fn new(adapter: Adapter, manager: &TokenManager) -> Self {
        let inner = match adapter {
            Adapter::Tower => {
                let http =
                    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
                let clone_full: CloneFull = |body| Some(body.clone());
                let policy = policy::Standard::default()
                    .and::<_, _, hyper_util::client::legacy::Error>(policy::clone_body_fn(
                        clone_full,
                    ));
                let service = ProcoreAuthLayer::new(manager.clone()).layer(http);
                Inner::Tower(FollowRedirectLayer::with_policy(policy).layer(service))
            }
            Adapter::Reqwest => Inner::Reqwest(
                reqwest_middleware::ClientBuilder::new(
                    procore_auth_reqwest::client_builder()
                        .build()
                        .expect("a reqwest client"),
                )
                .with(ProcoreAuthMiddleware::new(manager.clone()))
                .build(),
            ),
        };
        Self { inner }
    }

    /// `GET url`: the final status, or the core error behind a failure.
    pub async fn get(&self, url: &str) -> Result<StatusCode, AuthError> {
        self.send(crate::get(url)).await.map(|reply| reply.status)
    }

    /// Sends a request with a buffered body, following redirects; reads the whole
    /// final response.
    ///
    /// # Panics
    ///
    /// On a failure that is not an authorization error (no scenario expects one).
    pub async fn send(&self, request: Request<Bytes>) -> Result<Reply, AuthError> {
        match &self.inner {
            Inner::Tower(service) => {
                tower_reply(service.clone().oneshot(request.map(Full::new)).await).await
            }
            Inner::Reqwest(client) => {
                let (request, mut extensions) = reqwest_request(request);
                reqwest_reply(
                    client
                        .execute_with_extensions(request, &mut extensions)
                        .await,
                )
                .await
            }
        }
    }
}
