//! The HTTP/JSON API (see [`crate::controller`] for the endpoints): routing,
//! the bearer-token check, and the mapping of errors to status codes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::hub::SubscribeError;
use super::hub::{Feed, Hub};
use super::persist::NotDurable;
use super::wire::{
    ErrorBody, ErrorCode, PutAnswer, ReleaseQuery, RenewRequest, WatchQuery, MAX_OBJECT_BYTES,
    NDJSON,
};
use super::{check, lock, Shared};
use crate::error::ConfigError;
use crate::lease::parse_subnet_key;
use crate::objects::ObjectKey;
use crate::registry::Registry;
use crate::store::{AcquireRequest, StoreError};

/// The router of every endpoint, behind the token check.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/config", get(config))
        .route("/v1/leases", get(list).post(acquire))
        .route("/v1/leases/{key}", put(renew).delete(release))
        .route("/v1/watch", get(watch))
        .route("/v1/objects", get(list_objects))
        .route("/v1/objects/watch", get(watch_objects))
        .route(
            "/v1/objects/{resource}/{namespace}/{name}",
            put(put_object)
                .delete(delete_object)
                .layer(DefaultBodyLimit::max(MAX_OBJECT_BYTES)),
        )
        // Cluster-scoped kinds: no namespace segment.
        .route(
            "/v1/objects/namespaces/{name}",
            put(put_namespace)
                .delete(delete_namespace)
                .layer(DefaultBodyLimit::max(MAX_OBJECT_BYTES)),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(shared.clone(), authorize))
        // Outermost: refusals are observed too.
        .layer(middleware::from_fn_with_state(
            shared.telemetry.clone(),
            super::telemetry::observe,
        ))
        .with_state(shared)
}

/// An error answer.
#[derive(Debug)]
pub(crate) enum ApiError {
    Store(StoreError),
    BadRequest(String),
    /// One field of the body cannot be accepted ([`ConfigError::Invalid`]).
    Invalid(ConfigError),
    /// A request axum refused to read (e.g. 413 for a body too large).
    Rejected(StatusCode, String),
    Unauthorized,
    NotFound,
    /// No object under this key (its path below the prefix).
    NoObject(String),
    Unavailable(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::Store(e)
    }
}

impl From<NotDurable> for ApiError {
    fn from(e: NotDurable) -> ApiError {
        ApiError::Unavailable(match e {
            NotDurable::WriteFailed(why) => format!("change not persisted: {why}"),
            NotDurable::Stopped => "the controller is stopping".to_owned(),
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::Store(e) => store_error(e),
            ApiError::BadRequest(m) => (
                StatusCode::BAD_REQUEST,
                ErrorBody::new(ErrorCode::BadRequest, m),
            ),
            ApiError::Invalid(e) => (
                StatusCode::BAD_REQUEST,
                ErrorBody {
                    field: match e.root() {
                        ConfigError::Invalid { field, .. } => Some(field.clone()),
                        _ => None,
                    },
                    ..ErrorBody::new(ErrorCode::BadRequest, e.to_string())
                },
            ),
            ApiError::Rejected(status, m) => (status, ErrorBody::new(ErrorCode::BadRequest, m)),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                ErrorBody::new(ErrorCode::Unauthorized, "missing or wrong bearer token"),
            ),
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                ErrorBody::new(ErrorCode::NotFound, "no such endpoint"),
            ),
            ApiError::NoObject(key) => (
                StatusCode::NOT_FOUND,
                ErrorBody {
                    key: Some(key.clone()),
                    ..ErrorBody::new(ErrorCode::NotFound, format!("no object {key}"))
                },
            ),
            ApiError::Unavailable(m) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorBody::new(ErrorCode::Unavailable, m),
            ),
        };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

fn store_error(e: StoreError) -> (StatusCode, ErrorBody) {
    let msg = e.to_string();
    match e {
        StoreError::LeaseLost { subnet } => (
            StatusCode::CONFLICT,
            ErrorBody {
                subnet: Some(subnet),
                ..ErrorBody::new(ErrorCode::LeaseLost, msg)
            },
        ),
        StoreError::OutOfSubnets {
            network,
            subnet_len,
            count,
        } => (
            StatusCode::INSUFFICIENT_STORAGE,
            ErrorBody {
                network: Some(network),
                subnet_len: Some(subnet_len),
                count: Some(count),
                ..ErrorBody::new(ErrorCode::OutOfSubnets, msg)
            },
        ),
        // The code says what it is; the message is the reason alone.
        StoreError::InvalidObject(why) => (
            StatusCode::BAD_REQUEST,
            ErrorBody::new(ErrorCode::InvalidObject, why),
        ),
        StoreError::TooManyObjects { limit } => (
            StatusCode::INSUFFICIENT_STORAGE,
            ErrorBody {
                limit: Some(limit),
                ..ErrorBody::new(ErrorCode::TooManyObjects, msg)
            },
        ),
        StoreError::Compacted { requested, oldest } => (
            StatusCode::GONE,
            ErrorBody {
                requested: Some(requested),
                oldest: Some(oldest),
                ..ErrorBody::new(ErrorCode::Compacted, msg)
            },
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorBody::new(ErrorCode::Internal, msg),
        ),
    }
}

/// Lets a request through only with `Authorization: Bearer <token>`.
async fn authorize(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().as_bytes());
    match given {
        Some(t) if bool::from(t.ct_eq(&shared.token)) => next.run(req).await,
        _ => {
            tracing::debug!(path = %req.uri().path(), "refused: missing or wrong token");
            ApiError::Unauthorized.into_response()
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::Rejected(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint".to_owned(),
    )
}

/// A request's body, read within the controller's body timeout: 408 when
/// it does not arrive in time (a client trickling its body holds a
/// connection no longer), else what axum's `Bytes` gives (413 above the
/// route's body limit).
pub(crate) struct TimedBody(Result<Bytes, ApiError>);

impl FromRequest<Arc<Shared>> for TimedBody {
    type Rejection = Infallible;

    async fn from_request(req: Request, shared: &Arc<Shared>) -> Result<Self, Infallible> {
        let limit = shared.body_timeout;
        let read = Bytes::from_request(req, shared);
        Ok(TimedBody(match tokio::time::timeout(limit, read).await {
            Ok(body) => {
                body.map_err(|e: BytesRejection| ApiError::Rejected(e.status(), e.body_text()))
            }
            Err(_) => Err(ApiError::Rejected(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {limit:?}"),
            )),
        }))
    }
}

fn parse_body<T: DeserializeOwned>(body: Result<Bytes, ApiError>) -> Result<T, ApiError> {
    let body = body?;
    serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("request body: {e}")))
}

fn parse_query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// Applies a change to the registry and answers once it is durable.
async fn mutate<T>(
    shared: &Shared,
    f: impl FnOnce(&mut Registry, SystemTime) -> Result<T, StoreError>,
) -> Result<T, ApiError> {
    let (result, revision) = {
        let mut reg = lock(&shared.registry);
        let before = reg.revision();
        let result = f(&mut reg, SystemTime::now());
        let revision = reg.revision();
        if revision != before {
            shared.changed();
        }
        (result, revision)
    };
    // Also on an error: the call may have expired leases on the way.
    shared.persist.wait_durable(revision).await?;
    Ok(result?)
}

async fn config(State(shared): State<Arc<Shared>>) -> Response {
    let conf = *lock(&shared.registry).config();
    Json(conf).into_response()
}

async fn list(State(shared): State<Arc<Shared>>) -> Result<Response, ApiError> {
    let snapshot = lock(&shared.registry).list();
    // Show no revision that a crash could still take back.
    shared.persist.wait_durable(snapshot.revision).await?;
    Ok(Json(snapshot).into_response())
}

async fn acquire(
    State(shared): State<Arc<Shared>>,
    TimedBody(body): TimedBody,
) -> Result<Response, ApiError> {
    let req: AcquireRequest = parse_body(body)?;
    check::acquire(&req).map_err(ApiError::Invalid)?;
    let lease = mutate(&shared, |reg, now| reg.acquire(&req, now)).await?;
    tracing::info!(subnet = %lease.subnet, public_ip = %lease.attrs.public_ip, "lease acquired");
    Ok(Json(lease).into_response())
}

async fn renew(
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
    TimedBody(body): TimedBody,
) -> Result<Response, ApiError> {
    let subnet = parse_subnet_key(&key).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let req: RenewRequest = parse_body(body)?;
    check::renew(&req).map_err(ApiError::Invalid)?;
    let public_ip = req.holder().map_err(ApiError::BadRequest)?;
    let lease = mutate(&shared, |reg, now| {
        reg.renew(subnet, public_ip, req.attrs, req.ttl_secs, now)
    })
    .await?;
    tracing::debug!(%subnet, %public_ip, "lease renewed");
    Ok(Json(lease).into_response())
}

async fn release(
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
    query: Result<Query<ReleaseQuery>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let subnet = parse_subnet_key(&key).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let ReleaseQuery { public_ip } = parse_query(query)?;
    let removed = mutate(&shared, |reg, now| Ok(reg.release(subnet, public_ip, now))).await?;
    if removed {
        tracing::info!(%subnet, %public_ip, "lease released");
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn watch(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    watch_feed(&shared.hubs.leases, &shared, query)
}

/// Starts a watch stream of one feed (leases or objects).
fn watch_feed<E: Feed>(
    hub: &Hub<E>,
    shared: &Shared,
    query: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let WatchQuery { after } = parse_query(query)?;
    let sub = hub
        .subscribe(&shared.registry, after)
        .map_err(|e| match e {
            SubscribeError::Store(e) => ApiError::Store(e),
            SubscribeError::Closed => ApiError::Unavailable("the controller is stopping".into()),
        })?;
    tracing::debug!(after, watchers = hub.watchers(), "watch started");
    Response::builder()
        .header(header::CONTENT_TYPE, NDJSON)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(sub.into_stream()))
        .map_err(|e| ApiError::Unavailable(e.to_string()))
}

async fn list_objects(State(shared): State<Arc<Shared>>) -> Result<Response, ApiError> {
    let list = lock(&shared.registry).list_objects();
    // Show no revision that a crash could still take back.
    shared.persist.wait_durable(list.revision).await?;
    Ok(Json(list).into_response())
}

async fn watch_objects(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    watch_feed(&shared.hubs.objects, &shared, query)
}

/// The object key of a path's three segments; 400 when they name none.
fn object_key(resource: &str, namespace: &str, name: &str) -> Result<ObjectKey, ApiError> {
    key_of_path(format!("{resource}/{namespace}/{name}"))
}

/// The object key of a path below `/v1/objects/`; 400 when it names none.
fn key_of_path(path: String) -> Result<ObjectKey, ApiError> {
    ObjectKey::from_path(&path).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{path:?} is no object key (resource/namespace/name, or resource/name for a \
             cluster-scoped kind, with a resource twill stores and DNS-subdomain names)"
        ))
    })
}

async fn put_object(
    State(shared): State<Arc<Shared>>,
    Path((resource, namespace, name)): Path<(String, String, String)>,
    TimedBody(body): TimedBody,
) -> Result<Response, ApiError> {
    let key = object_key(&resource, &namespace, &name)?;
    put_key(&shared, key, body).await
}

async fn put_namespace(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    TimedBody(body): TimedBody,
) -> Result<Response, ApiError> {
    let key = key_of_path(format!("namespaces/{name}"))?;
    put_key(&shared, key, body).await
}

/// Stores a put's body under `key`.
async fn put_key(
    shared: &Shared,
    key: ObjectKey,
    body: Result<Bytes, ApiError>,
) -> Result<Response, ApiError> {
    let object: serde_json::Value = parse_body(body)?;
    // Stored (and streamed) re-serialized: bound that too, so that every
    // watch line stays within what a client reads.
    let stored = serde_json::to_vec(&object).map_or(usize::MAX, |v| v.len());
    if stored > MAX_OBJECT_BYTES {
        return Err(ApiError::Rejected(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the object is {stored} bytes as stored, more than {MAX_OBJECT_BYTES}"),
        ));
    }
    let path = key.path();
    let revision = mutate(shared, |reg, _| reg.put_object(key, object)).await?;
    tracing::debug!(key = %path, revision, "object stored");
    Ok(Json(PutAnswer { revision }).into_response())
}

async fn delete_object(
    State(shared): State<Arc<Shared>>,
    Path((resource, namespace, name)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let key = object_key(&resource, &namespace, &name)?;
    delete_key(&shared, key).await
}

async fn delete_namespace(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let key = key_of_path(format!("namespaces/{name}"))?;
    delete_key(&shared, key).await
}

/// Deletes the object under `key`; 404 when there was none.
async fn delete_key(shared: &Shared, key: ObjectKey) -> Result<StatusCode, ApiError> {
    if mutate(shared, |reg, _| Ok(reg.delete_object(&key))).await? {
        tracing::debug!(key = %key.path(), "object deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NoObject(key.path()))
    }
}
