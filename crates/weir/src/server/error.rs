//! API errors: grpc-gateway's body, as the Argo Server answers and Argo's clients read it
//! (`{"code": 5, "message": …, "details": []}`: the gRPC status code), with Weir's stable
//! snake_case code beside it (`"error": {"code": "not_found", "message": …}`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The gRPC status code (grpc-gateway's field, which Argo's clients read): 3 invalid
    /// argument, 5 not found, 6 already exists, 7 permission denied, 8 resource exhausted,
    /// 12 unimplemented, 13 internal, 14 unavailable, 16 unauthenticated.
    pub code: i32,
    pub message: String,
    /// Always empty (grpc-gateway's field).
    #[schema(value_type = Vec<Object>)]
    pub details: Vec<serde_json::Value>,
    pub error: ErrorDetail,
}

/// The gRPC status code of an HTTP status, as grpc-gateway maps them.
pub fn grpc_code(status: StatusCode) -> i32 {
    match status.as_u16() {
        400 | 405 | 413 | 415 | 422 => 3,
        401 => 16,
        403 => 7,
        404 => 5,
        409 => 6,
        429 => 8,
        501 => 12,
        503 => 14,
        504 => 4,
        _ => 13,
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: `bad_request`, `invalid_workflow`, `unauthenticated`, `forbidden`, `not_found`,
    /// `invalid_name`, `conflict`, `payload_too_large`, `unsupported_media_type`, `internal`, `unavailable`,
    /// `unimplemented`.
    pub code: String,
    pub message: String,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// What went wrong inside, for the server's log only: a 500 tells the client no more than
    /// a reference to the log line.
    detail: Option<String>,
}

/// The inside story of a 5xx, handed from its response to the server's log
/// ([`ApiError::internal`]).
#[derive(Clone, Debug)]
pub struct Internal(pub String);

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: None,
        }
    }
    pub fn bad_request(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m)
    }
    pub fn not_found(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", m)
    }
    pub fn conflict(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", m)
    }
    pub fn unauthenticated(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", m)
    }
    pub fn forbidden(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", m)
    }
    /// A fault of the server: the client is told only that, with a reference to the log line
    /// that holds `detail` (internal text, paths and SQL stay in the server's log).
    pub fn internal(detail: impl Into<String>) -> ApiError {
        let reference = crate::ambient::random_suffix();
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: format!(
                "internal error; the server's log has the details under reference {reference}"
            ),
            detail: Some(format!("{reference}: {}", detail.into())),
        }
    }
    /// The database is out of reach for now: try again.
    pub fn unavailable(detail: impl Into<String>) -> ApiError {
        ApiError {
            detail: Some(detail.into()),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database is unavailable; try again later",
            )
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        if let Some(i) = e.downcast_ref::<crate::usage::Invalid>() {
            return ApiError::new(StatusCode::BAD_REQUEST, "invalid_workflow", i.0.clone());
        }
        if let Some(u) = e.downcast_ref::<crate::usage::Usage>() {
            return ApiError::bad_request(u.0.clone());
        }
        if let Some(weir_exec::InvalidPath(m)) =
            e.downcast_ref().or_else(|| match e.downcast_ref() {
                Some(weir_exec::RepoError::InvalidName(p)) => Some(p),
                _ => None,
            })
        {
            return ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", m.clone());
        }
        if let Some(c) = e.downcast_ref::<crate::usage::Conflict>() {
            return ApiError::conflict(c.0.clone());
        }
        if let Some(s) = e.downcast_ref::<weir_store::Error>() {
            return match s {
                weir_store::Error::RunNotFound(_) => ApiError::not_found(s.to_string()),
                weir_store::Error::Ambiguous(..) => ApiError::not_found(s.to_string()),
                weir_store::Error::RunExists(_) => ApiError::conflict(s.to_string()),
                weir_store::Error::InvalidName(m) => {
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", m.clone())
                }
                e if weir_store::Store::is_unavailable(e) => ApiError::unavailable(s.to_string()),
                _ => ApiError::internal(s.to_string()),
            };
        }
        ApiError::internal(format!("{e:#}"))
    }
}

impl From<weir_exec::RepoError> for ApiError {
    fn from(e: weir_exec::RepoError) -> ApiError {
        match e {
            weir_exec::RepoError::InvalidName(weir_exec::InvalidPath(m)) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", m)
            }
            e => ApiError::internal(e.to_string()),
        }
    }
}

impl From<weir_store::Error> for ApiError {
    fn from(e: weir_store::Error) -> ApiError {
        ApiError::from(anyhow::Error::from(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(ErrorBody {
                code: grpc_code(self.status),
                message: self.message.clone(),
                details: Vec::new(),
                error: ErrorDetail {
                    code: self.code.to_string(),
                    message: self.message,
                },
            }),
        )
            .into_response();
        if let Some(detail) = self.detail {
            r.extensions_mut().insert(Internal(detail));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"weir\""),
            );
        }
        r
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
